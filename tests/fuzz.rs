//! Property tests of the front end: the shipped experiments and manifests,
//! mutated (bytes changed, lines cut, duplicated or swapped, deep nesting,
//! long names, bytes that are not UTF-8), never make `plan` panic, abort or
//! hang, and every error it reports carries a location. CI runs a short
//! budget; `EFRLHF_FUZZ_CASES=20000` runs a long one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

/// Each case: a file and the mutations applied to it.
#[derive(Debug, Clone)]
enum Mutation {
    /// Byte at a position (as a share of the length) replaced.
    Byte(f64, u8),
    /// A range cut out.
    Cut(f64, usize),
    /// A line repeated.
    Repeat(f64),
    /// Two lines swapped.
    Swap(f64, f64),
    /// Text inserted: nesting, long names, control characters.
    Insert(f64, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b'{', b'}', b'"', b'=', b';', b'/', b'*', b'#', b'\n', b'\\', b'-', b'.', b'0', b'9', b'a',
        b' ', b'(', b')', 0xff, 0xc3, 0x00,
    ]);
    let inserts = prop_oneof![
        (1usize..3000).prop_map(|n| "{ a ".repeat(n)),
        (1usize..6000).prop_map(|n| "/* ".repeat(n)),
        (1usize..70_000)
            .prop_map(|n| format!("stage \"{}\" kind=\"dataset\" {{ }}\n", "s".repeat(n))),
        Just("input \"nowhere\" role=\"x\"\n".to_string()),
        Just("path=\"/dev/zero\"".to_string()),
        Just("experiment \"../../escape\" { }\n".to_string()),
        Just("vary \"sft.lr\" 1 2 3\n".to_string()),
        Just("9223372036854775807".to_string()),
        Just("1e308".to_string()),
        Just("-0".to_string()),
        Just("#true".to_string()),
        "[a-z\\-\\. \"{}=]{0,40}",
    ];
    prop_oneof![
        (0.0..1.0f64, interesting).prop_map(|(p, b)| Mutation::Byte(p, b)),
        (0.0..1.0f64, 1usize..200).prop_map(|(p, n)| Mutation::Cut(p, n)),
        (0.0..1.0f64).prop_map(Mutation::Repeat),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (0.0..1.0f64, inserts).prop_map(|(p, s)| Mutation::Insert(p, s)),
    ]
}

fn at(len: usize, share: f64) -> usize {
    ((len as f64 * share) as usize).min(len)
}

fn apply(mut text: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Byte(p, b) => {
            if !text.is_empty() {
                let i = at(text.len() - 1, *p);
                text[i] = *b;
            }
        }
        Mutation::Cut(p, n) => {
            let i = at(text.len(), *p);
            let j = (i + n).min(text.len());
            text.drain(i..j);
        }
        Mutation::Repeat(p) | Mutation::Swap(p, _) => {
            let lines: Vec<Vec<u8>> = text.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
            let mut lines = lines;
            let i = at(lines.len().saturating_sub(1), *p);
            match m {
                Mutation::Swap(_, q) => {
                    let j = at(lines.len().saturating_sub(1), *q);
                    lines.swap(i, j);
                }
                _ => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
            }
            text = lines.join(&b'\n');
        }
        Mutation::Insert(p, s) => {
            let i = at(text.len(), *p);
            text.splice(i..i, s.bytes());
        }
    }
    text
}

/// A folder laid out like the repository, so the shipped files' relative paths resolve.
fn workspace() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("experiments"));
    let _ = std::os::unix::fs::symlink(root.join("data"), dir.join("data"));
    let plugins = dir.join("plugins/examples");
    let _ = std::fs::create_dir_all(&plugins);
    for f in ["shout.kdl", "shout.py"] {
        let _ = std::fs::copy(root.join("plugins/examples").join(f), plugins.join(f));
    }
    dir
}

/// The files mutated: every shipped experiment, the example manifest, and
/// each built-in manifest (loaded as an external kind under another name).
fn targets() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut exps: Vec<PathBuf> = std::fs::read_dir(root.join("experiments"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    exps.sort();
    for p in exps {
        out.push((
            format!("experiments/{}", p.file_name().unwrap().to_string_lossy()),
            std::fs::read(&p).unwrap(),
        ));
    }
    out.push((
        "plugins/examples/shout.kdl".into(),
        std::fs::read(root.join("plugins/examples/shout.kdl")).unwrap(),
    ));
    out
}

/// Plans `file` in `dir` with a deadline; returns (exit code or -signal, stderr, seconds).
fn plan(dir: &Path, file: &str) -> (i32, String, f64) {
    let started = Instant::now();
    let mut child = Command::new(common::BIN)
        .current_dir(dir)
        .args(["--cache-dir", "cache", "plan", file])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("EFRLHF_PLUGIN_PATH")
        // `paper.kdl` names the Hub: plans here use only what is known locally.
        .env("HF_HUB_OFFLINE", "1")
        .spawn()
        .unwrap();
    // Read stderr while waiting: a long message must not fill the pipe and stall the child.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
        err
    });
    let deadline = started + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`plan {file}` hung (over 20 s)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = reader.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0));
    (code, err, started.elapsed().as_secs_f64())
}

fn cases() -> u32 {
    std::env::var("EFRLHF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_experiment_or_manifest_never_breaks_plan(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let dir = workspace();
        let all = targets();
        let (rel, text) = &all[which.index(all.len())];
        let mutated = mutations.iter().fold(text.clone(), apply);
        let (file, body) = if rel.starts_with("plugins/") {
            // The demo experiment reads the example manifest.
            let demo = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/demo.kdl")).unwrap();
            std::fs::write(dir.join(rel), &mutated).unwrap();
            ("experiments/demo.kdl".to_string(), demo)
        } else {
            std::fs::write(dir.join("plugins/examples/shout.kdl"),
                std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/examples/shout.kdl")).unwrap()).unwrap();
            (rel.clone(), mutated)
        };
        std::fs::write(dir.join(&file), &body).unwrap();
        let (code, err, _) = plan(&dir, &file);
        // Failures name the mutations shortly (an insert may be 70,000 characters).
        let what = format!("{mutations:?}").chars().take(400).collect::<String>();
        let said: String = err.lines().filter(|l| l.contains("panicked") || l.contains("error")).map(|l| l.chars().take(300).collect::<String>() + "\n").collect();
        prop_assert!(!err.contains("panicked"), "panic on {rel} with {what}:\n{said}");
        prop_assert!([0, 2, 3].contains(&code), "exit {code} on {rel} with {what}:\n{said}");
        if code != 0 {
            // miette renders a location as `[file:line:col]`; messages without a
            // snippet name `file:line:col` themselves.
            let located = err.lines().any(|l| {
                let l = l.trim();
                l.contains(".kdl:") && l.split(".kdl:").nth(1).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            });
            let head: String = err.chars().take(2000).collect();
            prop_assert!(located, "no location on {rel} with {what}:\n{head}");
        }
    }
}
