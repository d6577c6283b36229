//! The `efrlhf` command: everything happens in `efrlhf::cli`.

fn main() {
    std::process::exit(efrlhf::cli::main());
}
