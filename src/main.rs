fn main() {
    std::process::exit(efrlhf::cli::main());
}
