//! The shared remote cache: a folder, S3 (moto's server on 127.0.0.1) and a
//! plain HTTP cache (a small server below). Results pushed from one cache
//! are pulled into an empty one elsewhere and reused as if computed there;
//! tampered objects are refused; concurrent and killed pushes never leave a
//! manifest whose objects are missing; credentials never show.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Real stages (OpinPref, a tokenizer, the lexical featurizer, φ) and a
/// 2 MiB stage of pseudo-random files, so transfers move real volumes.
fn body(remote: &str) -> String {
    let p = data("opinpref");
    format!(
        r#"experiment "shared" {{
    seed 7
    plugins "plugins"
    {remote}
}}
stage "train" kind="dataset" {{
    source "opinpref" path="{p}"
    split "train"
    limit 64
}}
stage "val" kind="dataset" {{
    source "opinpref" path="{p}"
    split "validation"
    limit 16
}}
stage "tok" kind="tokenizer" {{
    input "train"
    vocab-size 400
}}
stage "lexical" kind="featurize" {{
    input "train"
    method "lexical"
}}
stage "phi" kind="reward-model" {{
    input "train" "val"
    hidden 6 4 2
    epochs 5
}}
stage "blob" kind="tblob" {{
    files 8
    kib 256
}}
"#,
        p = p.display()
    )
}

const STAGES: [&str; 6] = ["blob", "lexical", "phi", "tok", "train", "val"];

/// A sandbox with the `tblob` kind and `exp.kdl` naming `remote` (a KDL line, or "").
fn sandbox(name: &str, remote: &str) -> Sandbox {
    let s = Sandbox::new(name);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins");
    for f in ["tblob.kdl", "tblob.py"] {
        std::fs::copy(fixtures.join(f), s.path("plugins").join(f)).unwrap();
    }
    s.write("exp.kdl", &body(remote));
    s
}

/// `efrlhf --cache-dir CACHE ARGS` in the sandbox, with `env` set and no
/// remote named by the environment or a user's file.
fn command(s: &Sandbox, cache: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(&s.dir)
        .arg("--cache-dir")
        .arg(s.path(cache))
        .args(args)
        .env_remove("EFRLHF_CACHE")
        .env_remove("EFRLHF_REMOTE")
        .env_remove("AWS_PROFILE")
        .env("EFRLHF_REMOTE_CONFIG", s.path("no-remote.kdl"))
        .env("EFRLHF_HUB_OFFLINE", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// [`command`], run to its end.
fn at(s: &Sandbox, cache: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = command(s, cache, args, env).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "efrlhf panicked:\n{stderr}");
    out
}

/// As [`at`], asserting success; returns stdout and stderr together.
fn ok_at(s: &Sandbox, cache: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = at(s, cache, args, env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`efrlhf {}` failed:\n{text}",
        args.join(" ")
    );
    text
}

/// `plan --json` statuses by stage.
fn statuses(
    s: &Sandbox,
    cache: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut args = vec!["plan", "exp.kdl", "--json"];
    args.extend_from_slice(extra);
    let out = at(s, cache, &args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["id"].as_str().unwrap().to_string(),
                st["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all(status: &str) -> BTreeMap<String, String> {
    STAGES
        .iter()
        .map(|s| (s.to_string(), status.to_string()))
        .collect()
}

/// `run --json` events: (event, stage) pairs, and the whole objects.
fn run_json(
    s: &Sandbox,
    cache: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let mut args = vec!["run", "exp.kdl", "--json"];
    args.extend_from_slice(extra);
    let out = at(s, cache, &args, env);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `show --format json`: the metrics table, which must not depend on where
/// results came from (each output folder shown by its digest, the cache's path left out).
fn show_json(s: &Sandbox, cache: &str) -> serde_json::Value {
    let out = at(s, cache, &["show", "exp.kdl", "--format", "json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for st in v["stages"].as_array_mut().unwrap() {
        if let Some(path) = st["output"].as_str() {
            let digest = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            st["output"] = digest.into();
        }
    }
    v
}

/// Every manifest under a folder remote, with whether each object it lists
/// is there, whole and matching its digest.
fn manifests_whole(remote: &Path) -> (usize, Vec<String>) {
    let mut broken = Vec::new();
    let ac = remote.join("ac");
    let Ok(rd) = std::fs::read_dir(&ac) else {
        return (0, broken);
    };
    let mut n = 0;
    for e in rd.flatten() {
        n += 1;
        let m: serde_json::Value = match std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(m) => m,
            None => {
                broken.push(format!("{}: unreadable manifest", e.path().display()));
                continue;
            }
        };
        let mut objects: Vec<&serde_json::Value> =
            m["artifact"]["files"].as_array().unwrap().iter().collect();
        if !m["log"].is_null() {
            objects.push(&m["log"]);
        }
        for o in objects {
            let d = o["digest"].as_str().unwrap();
            let p = remote.join("cas").join(&d[..2]).join(d);
            match std::fs::read(&p) {
                Ok(bytes) if blake3_hex(&bytes) == d => {}
                Ok(_) => broken.push(format!("{}: content does not match", p.display())),
                Err(_) => broken.push(format!("{}: missing", p.display())),
            }
        }
    }
    (n, broken)
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[test]
fn a_folder_remote_shares_results_between_caches() {
    let s = sandbox("remote-folder", "remote \"team-remote\"");
    std::fs::create_dir_all(s.path("team-remote")).unwrap();
    // The coordinator computes and pushes.
    let first = run_json(&s, "cache-a", &["--push"], &[]);
    assert_eq!(stages_with(&first, "stage-done"), STAGES.to_vec());
    let (manifests, broken) = manifests_whole(&s.path("team-remote"));
    assert_eq!((manifests, broken), (6, Vec::<String>::new()));
    // An empty cache elsewhere: `plan --remote` says where each result would come from.
    assert_eq!(statuses(&s, "cache-b", &[], &[]), all("run"));
    assert_eq!(statuses(&s, "cache-b", &["--remote"], &[]), all("remote"));
    // A pull brings everything; then nothing is left to compute.
    let pulled = ok_at(&s, "cache-b", &["cache", "pull", "exp.kdl"], &[]);
    assert!(pulled.contains("pulled 6 results"), "{pulled}");
    assert_eq!(statuses(&s, "cache-b", &[], &[]), all("cached"));
    let again = run_json(&s, "cache-b", &[], &[]);
    assert_eq!(stages_with(&again, "stage-cached"), STAGES.to_vec());
    assert!(stages_with(&again, "stage-start").is_empty());
    ok_at(&s, "cache-b", &["cache", "verify"], &[]);
    // The same tables, the same report.
    assert_eq!(show_json(&s, "cache-a"), show_json(&s, "cache-b"));
    ok_at(&s, "cache-a", &["report", "exp.kdl", "-o", "a.html"], &[]);
    ok_at(&s, "cache-b", &["report", "exp.kdl", "-o", "b.html"], &[]);
    let (a, b) = (
        without_generated(&s.read("a.html")),
        without_generated(&s.read("b.html")),
    );
    assert!(a.contains("6 done") && a == b, "the reports differ");
    // `run --remote` on a third cache pulls instead of computing.
    let third = run_json(&s, "cache-c", &["--remote"], &[]);
    assert_eq!(stages_with(&third, "stage-pulled"), STAGES.to_vec());
    assert_eq!(stages_with(&third, "stage-pulling"), STAGES.to_vec());
    let blob = third
        .iter()
        .find(|e| e["event"] == "stage-pulling" && e["stage"] == "blob")
        .unwrap();
    // Eight files of 256 KiB and its metrics.json.
    assert!(blob["bytes"].as_u64().unwrap() > 8 * 256 * 1024, "{blob}");
    assert!(stages_with(&third, "stage-start").is_empty());
    let done = third.iter().find(|e| e["event"] == "run-done").unwrap();
    assert_eq!(done["pulled"], 6);
    // A no-op push uploads nothing.
    let noop = ok_at(&s, "cache-a", &["cache", "push", "exp.kdl"], &[]);
    assert!(
        noop.contains("pushed 0 results") && noop.contains("6 already there"),
        "{noop}"
    );
    // `cache ls --remote` lists the six results.
    let ls = ok_at(&s, "cache-c", &["cache", "ls", "--remote=team-remote"], &[]);
    for st in STAGES {
        assert!(ls.contains(&format!(" {st} ")), "{ls}");
    }
}

/// A report without the moment it was generated.
fn without_generated(html: &str) -> String {
    match html.find("Generated ") {
        Some(i) => {
            let end = html[i..].find(" UTC").map_or(html.len(), |j| i + j);
            format!("{}{}", &html[..i], &html[end..])
        }
        None => html.to_string(),
    }
}

#[test]
fn a_tampered_object_is_refused_and_its_stage_recomputed() {
    let s = sandbox("remote-tampered", "remote \"team-remote\"");
    std::fs::create_dir_all(s.path("team-remote")).unwrap();
    run_json(&s, "cache-a", &["--push"], &[]);
    // Change one byte of one of `blob`'s files on the remote (same size, same name).
    let manifest = find_manifest(&s.path("team-remote"), "blob");
    let digest = manifest["artifact"]["files"][3]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let object = s
        .path("team-remote")
        .join("cas")
        .join(&digest[..2])
        .join(&digest);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&object, &bytes).unwrap();
    // `run --remote`: the other stages are pulled, `blob` is refused and computed here.
    let events = run_json(&s, "cache-b", &["--remote"], &[]);
    assert_eq!(
        stages_with(&events, "stage-pulled"),
        vec!["lexical", "phi", "tok", "train", "val"]
    );
    assert_eq!(stages_with(&events, "stage-done"), vec!["blob"]);
    let warning = events
        .iter()
        .find(|e| e["event"] == "stage-warning" && e["stage"] == "blob")
        .unwrap();
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains(&digest[..12]) && message.contains("does not match its digest"),
        "{message}"
    );
    // What was stored is the real result, not the tampered one.
    ok_at(&s, "cache-b", &["cache", "verify"], &[]);
    assert_eq!(show_json(&s, "cache-a"), show_json(&s, "cache-b"));
    // `cache pull` refuses it too, names it, and fails; the rest is pulled.
    let out = at(&s, "cache-c", &["cache", "pull", "exp.kdl"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pulled 5 results"), "{stderr}");
    assert!(
        stderr.contains("blob:") && stderr.contains(&digest[..12]),
        "{stderr}"
    );
    let plan = statuses(&s, "cache-c", &[], &[]);
    assert_eq!(plan["blob"], "run");
    assert_eq!(plan["phi"], "cached");
    // A manifest whose description does not hash to its key is refused as well.
    let tok = find_manifest_path(&s.path("team-remote"), "tok");
    let text = std::fs::read_to_string(&tok).unwrap();
    assert!(text.contains("\"int\": 400"));
    std::fs::write(&tok, text.replace("\"int\": 400", "\"int\": 401")).unwrap();
    let out = at(&s, "cache-d", &["cache", "pull", "exp.kdl"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("does not hash to its key"),
        "{stderr}"
    );
    // A push meets the refused manifest: that result is named, the others go on.
    let out = at(&s, "cache-a", &["cache", "push", "exp.kdl"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tok:") && stderr.contains("remove it from the remote"),
        "{stderr}"
    );
    assert!(stderr.contains("5 already there"), "{stderr}");
}

fn find_manifest_path(remote: &Path, stage: &str) -> PathBuf {
    for e in std::fs::read_dir(remote.join("ac")).unwrap().flatten() {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        if m["run"]["stage_id"] == stage {
            return e.path();
        }
    }
    panic!("no manifest of `{stage}`")
}

fn find_manifest(remote: &Path, stage: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(find_manifest_path(remote, stage)).unwrap()).unwrap()
}

#[test]
fn a_non_deterministic_stage_is_reported_and_the_remote_keeps_the_first_result() {
    let s = sandbox("remote-nondeterministic", "remote \"team-remote\"");
    std::fs::create_dir_all(s.path("team-remote")).unwrap();
    let noisy = s
        .read("exp.kdl")
        .replace("    kib 256\n", "    kib 4\n    noise #true\n");
    s.write("exp.kdl", &noisy);
    ok_at(
        &s,
        "cache-a",
        &["run", "exp.kdl", "--only", "blob", "--push"],
        &[],
    );
    ok_at(&s, "cache-b", &["run", "exp.kdl", "--only", "blob"], &[]);
    let pushed = ok_at(&s, "cache-b", &["cache", "push", "exp.kdl"], &[]);
    assert!(
        pushed.contains("blob: the remote holds a different result for the same key")
            && pushed.contains("not deterministic"),
        "{pushed}"
    );
    // The remote's result is the first one, whole.
    let (n, broken) = manifests_whole(&s.path("team-remote"));
    assert_eq!((n, broken), (1, Vec::<String>::new()));
}

#[test]
fn concurrent_pushes_of_the_same_results_leave_one_whole_copy() {
    let s = sandbox("remote-concurrent", "remote \"team-remote\"");
    std::fs::create_dir_all(s.path("team-remote")).unwrap();
    ok_at(&s, "cache-a", &["run", "exp.kdl"], &[]);
    let spawn = || {
        command(&s, "cache-a", &["cache", "push", "exp.kdl"], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..3 {
        if round > 0 {
            std::fs::remove_dir_all(s.path("team-remote")).unwrap();
            std::fs::create_dir_all(s.path("team-remote")).unwrap();
        }
        let pushers: Vec<Child> = (0..4).map(|_| spawn()).collect();
        let mut uploaded = 0;
        for p in pushers {
            let out = p.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            assert!(!err.contains("different result"), "{err}");
            uploaded += err.matches("pushed ").count();
        }
        assert!(uploaded > 0);
        let (n, broken) = manifests_whole(&s.path("team-remote"));
        assert_eq!((n, broken), (6, Vec::<String>::new()));
    }
    let pulled = ok_at(&s, "cache-b", &["cache", "pull", "exp.kdl"], &[]);
    assert!(pulled.contains("pulled 6 results"), "{pulled}");
    ok_at(&s, "cache-b", &["cache", "verify"], &[]);
}

/// A small pseudo-random generator (the test's own; no dependency).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[test]
fn pushes_killed_at_random_moments_never_leave_a_manifest_without_its_objects() {
    let s = sandbox("remote-killed", "remote \"team-remote\"");
    let big = s
        .read("exp.kdl")
        .replace("    files 8\n    kib 256\n", "    files 24\n    kib 1024\n");
    s.write("exp.kdl", &big);
    ok_at(&s, "cache-a", &["run", "exp.kdl"], &[]);
    // How long a whole push takes here, to kill within it.
    std::fs::create_dir_all(s.path("timing-remote")).unwrap();
    let t0 = Instant::now();
    ok_at(
        &s,
        "cache-a",
        &["cache", "push", "exp.kdl", "--remote=timing-remote"],
        &[],
    );
    let whole = t0.elapsed().as_millis() as u64;
    std::fs::create_dir_all(s.path("team-remote")).unwrap();
    let remote = s.path("team-remote");
    let check = || manifests_whole(&remote);
    let reset = || {
        std::fs::remove_dir_all(&remote).unwrap();
        std::fs::create_dir_all(&remote).unwrap();
    };
    let (cut_short, seed) = kill_pushes(&s, &[], whole, &check, Some(&reset));
    // Most kills landed inside a push (not before it started or after it ended).
    assert!(
        cut_short >= 5,
        "only {cut_short} of 20 kills cut a push short (seed {seed})"
    );
    // What the killed pushes left is finished by the next one, and usable.
    ok_at(&s, "cache-a", &["cache", "push", "exp.kdl"], &[]);
    assert_eq!(manifests_whole(&s.path("team-remote")), (6, Vec::new()));
    let pulled = ok_at(&s, "cache-b", &["cache", "pull", "exp.kdl"], &[]);
    assert!(pulled.contains("pulled 6 results"), "{pulled}");
    ok_at(&s, "cache-b", &["cache", "verify"], &[]);
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Starts `cache push exp.kdl` 20 times, killing each (SIGKILL) at a random
/// moment within `whole` ms; after each kill `check` must find no manifest
/// whose objects are missing. `reset` (if given) empties the remote once a
/// push completed, so later kills land in a real push again. Returns how
/// many kills cut a push short, and the seed.
fn kill_pushes(
    s: &Sandbox,
    env: &[(&str, &str)],
    whole: u64,
    check: &dyn Fn() -> (usize, Vec<String>),
    reset: Option<&dyn Fn()>,
) -> (usize, u64) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut cut_short = 0;
    for i in 0..20 {
        let mut child = command(s, "cache-a", &["cache", "push", "exp.kdl"], env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let after = rng.below(whole + 20);
        std::thread::sleep(Duration::from_millis(after));
        unsafe { kill(child.id() as i32, 9) };
        let completed = child.wait().unwrap().success();
        let (manifests, broken) = check();
        assert!(
            broken.is_empty(),
            "kill {i} after {after} ms (seed {seed}): {broken:?}"
        );
        if manifests < 6 {
            cut_short += 1;
        }
        if let (true, Some(reset)) = (completed, reset) {
            reset();
        }
    }
    (cut_short, seed)
}

#[test]
fn bad_remotes_get_clear_errors() {
    let s = sandbox("remote-bad", "remote \"gs://team/efrlhf\"");
    let out = at(&s, "cache", &["plan", "exp.kdl"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("E-REMOTE") && err.contains("exp.kdl:4"),
        "{err}"
    );
    assert!(err.contains("storage.googleapis.com"), "{err}");
    // Properties an S3 remote takes, on a folder.
    s.write("exp.kdl", &body("remote \"shared\" region=\"eu-west-1\""));
    let err =
        String::from_utf8_lossy(&at(&s, "cache", &["plan", "exp.kdl"], &[]).stderr).into_owned();
    assert!(err.contains("settings of an S3 remote"), "{err}");
    // A folder that is not there (an unmounted share) is an error, not an empty remote.
    s.write("exp.kdl", &body(""));
    let out = at(
        &s,
        "cache",
        &["cache", "pull", "exp.kdl", "--remote=/nonexistent/efrlhf"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not exist"),
        "{err}"
    );
    // No remote named anywhere.
    let out = at(&s, "cache", &["cache", "push"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no remote is named"),
        "{err}"
    );
    // A read-only remote refuses `--push` before anything runs.
    std::fs::create_dir_all(s.path("ro")).unwrap();
    s.write("exp.kdl", &body("remote \"ro\" read-only=#true"));
    let out = at(&s, "cache", &["run", "exp.kdl", "--push"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("read-only"), "{err}");
    assert!(!s.path("cache/records").exists());
}

#[test]
fn an_unreachable_remote_leaves_the_run_to_the_local_cache() {
    let s = sandbox("remote-offline", "");
    // Nothing listens on port 9 of 127.0.0.1.
    let events = run_json(&s, "cache", &["--remote=http://127.0.0.1:9/efrlhf"], &[]);
    assert_eq!(stages_with(&events, "stage-done"), STAGES.to_vec());
    let out = at(
        &s,
        "cache",
        &["plan", "exp.kdl", "--remote=http://127.0.0.1:9/efrlhf"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    // Everything is cached here, so the remote was never needed.
    assert!(!err.contains("cannot be read"), "{err}");
    let out = at(
        &s,
        "cache-2",
        &["plan", "exp.kdl", "--remote=http://127.0.0.1:9/efrlhf"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("planning with this cache alone"),
        "{err}"
    );
}

// ---------------------------------------------------------------- HTTP ---

/// A plain HTTP cache on 127.0.0.1: GET, HEAD and PUT (with `If-None-Match: *`)
/// of objects kept in memory, Basic credentials required when given, and a
/// read-only switch.
struct HttpCache {
    port: u16,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    read_only: Arc<std::sync::atomic::AtomicBool>,
    /// Every `Authorization` header it saw (to check credentials travel, once).
    seen_auth: Arc<Mutex<Vec<String>>>,
}

impl HttpCache {
    fn start(user: &str, password: &str) -> HttpCache {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let objects = Arc::new(Mutex::new(BTreeMap::new()));
        let read_only = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_auth = Arc::new(Mutex::new(Vec::new()));
        let want = format!("Basic {}", base64(&format!("{user}:{password}")));
        let (o, r, a) = (objects.clone(), read_only.clone(), seen_auth.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (o, r, a, want) = (o.clone(), r.clone(), a.clone(), want.clone());
                std::thread::spawn(move || serve(stream, &o, &r, &a, &want));
            }
        });
        HttpCache {
            port,
            objects,
            read_only,
            seen_auth,
        }
    }
}

/// A request's method, path and headers (names lower-cased); `None` at the
/// end of the connection.
fn read_head(reader: &mut impl BufRead) -> Option<(String, String, BTreeMap<String, String>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Some((method, path, headers));
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
}

fn serve(
    stream: TcpStream,
    objects: &Mutex<BTreeMap<String, Vec<u8>>>,
    read_only: &std::sync::atomic::AtomicBool,
    seen_auth: &Mutex<Vec<String>>,
    want: &str,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let Some((method, path, headers)) = read_head(&mut reader) else {
            return;
        };
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        seen_auth.lock().unwrap().push(auth.clone());
        let (status, reply): (u16, Vec<u8>) = if auth != want {
            (401, Vec::new())
        } else {
            let mut objs = objects.lock().unwrap();
            match method.as_str() {
                "GET" => match objs.get(&path) {
                    Some(b) => (200, b.clone()),
                    None => (404, Vec::new()),
                },
                "HEAD" => (if objs.contains_key(&path) { 200 } else { 404 }, Vec::new()),
                "PUT" if read_only.load(std::sync::atomic::Ordering::SeqCst) => (403, Vec::new()),
                "PUT"
                    if headers.get("if-none-match").map(String::as_str) == Some("*")
                        && objs.contains_key(&path) =>
                {
                    (412, Vec::new())
                }
                "PUT" => {
                    objs.insert(path.clone(), body);
                    (201, Vec::new())
                }
                _ => (405, Vec::new()),
            }
        };
        let head_only = method == "HEAD";
        let text = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if stream.write_all(text.as_bytes()).is_err() {
            return;
        }
        if !head_only && stream.write_all(&reply).is_err() {
            return;
        }
    }
}

fn base64(s: &str) -> String {
    // The test's own encoder (RFC 4648), independent of efrlhf's.
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64,sys; print(base64.b64encode(sys.argv[1].encode()).decode())",
            s,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every file below `dir`, read as text where it is (to look for secrets).
fn all_text_below(dir: &Path) -> String {
    let mut out = String::new();
    for f in files_below(dir) {
        if let Ok(bytes) = std::fs::read(dir.join(&f)) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

#[test]
fn an_http_cache_shares_results_and_a_read_only_one_still_serves_pulls() {
    let server = HttpCache::start("ci", "pa$$-word-31337");
    let url = format!(
        "http://ci:pa%24%24-word-31337@127.0.0.1:{}/efrlhf",
        server.port
    );
    let s = sandbox("remote-http", "");
    let remote_flag = format!("--remote={url}");
    let run_out = ok_at(
        &s,
        "cache-a",
        &["run", "exp.kdl", &remote_flag, "--push"],
        &[],
    );
    assert_eq!(
        server
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("/efrlhf/ac/"))
            .count(),
        6
    );
    // Pull into an empty cache: an HTTP cache cannot list, so name the experiment.
    let out = at(&s, "cache-b", &["cache", "pull", &remote_flag], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err.contains("cannot list"),
        "{err}"
    );
    server
        .read_only
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let pulled = ok_at(
        &s,
        "cache-b",
        &["cache", "pull", "exp.kdl", &remote_flag],
        &[],
    );
    assert!(pulled.contains("pulled 6 results"), "{pulled}");
    assert_eq!(statuses(&s, "cache-b", &[], &[]), all("cached"));
    assert_eq!(show_json(&s, "cache-a"), show_json(&s, "cache-b"));
    // Read-only for us: a push of something new is refused, and says so.
    let other = s.read("exp.kdl").replace("kib 256", "kib 128");
    s.write("exp.kdl", &other);
    ok_at(&s, "cache-b", &["run", "exp.kdl", "--only", "blob"], &[]);
    let out = at(
        &s,
        "cache-b",
        &["cache", "push", "exp.kdl", &remote_flag],
        &[],
    );
    let push_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && push_err.contains("refused the write"),
        "{push_err}"
    );
    assert!(push_err.contains("HTTP 403"), "{push_err}");
    // Wrong credentials: a clear refusal.
    let wrong = format!("--remote=http://ci:nope@127.0.0.1:{}/efrlhf", server.port);
    let out = at(&s, "cache-c", &["cache", "pull", "exp.kdl", &wrong], &[]);
    let err401 = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err401.contains("HTTP 401"),
        "{err401}"
    );
    // The password travelled in the Authorization header only, never in a message or file.
    assert!(
        server
            .seen_auth
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.starts_with("Basic "))
    );
    for text in [&run_out, &err, &pulled, &push_err, &err401] {
        assert!(!text.contains("31337") && !text.contains("pa$$"), "{text}");
    }
    for cache in ["cache-a", "cache-b", "cache-c"] {
        let stored = all_text_below(&s.path(cache));
        assert!(
            !stored.contains("31337"),
            "the password is stored in {cache}"
        );
    }
    let on_remote: String = server
        .objects
        .lock()
        .unwrap()
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(!on_remote.contains("31337"));
}

// ------------------------------------------------------------------ S3 ---

/// A stand-in for an instance's metadata service (IMDSv2), a container's
/// credentials endpoint and S3 at once: it hands out keys, and records each
/// S3 request it gets (answering NoSuchKey).
fn metadata_stub() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || answer_metadata(stream, &record));
        }
    });
    (url, seen)
}

fn answer_metadata(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    let Some((method, path, headers)) = read_head(&mut reader) else {
        return;
    };
    let (method, path) = (method.as_str(), path.as_str());
    let header = |k: &str| headers.get(k).map(String::as_str).unwrap_or("");
    let keys = |id: &str, token: &str| {
        format!(
            r#"{{"Code": "Success", "AccessKeyId": "{id}", "SecretAccessKey": "stub-secret-{id}", "Token": "{token}", "Expiration": "2099-01-01T00:00:00Z"}}"#
        )
    };
    let roles = "/latest/meta-data/iam/security-credentials/";
    let imds = header("x-aws-ec2-metadata-token") == "IMDS-SESSION";
    let (status, body) = match (method, path) {
        ("PUT", "/latest/api/token")
            if !header("x-aws-ec2-metadata-token-ttl-seconds").is_empty() =>
        {
            (200, "IMDS-SESSION".to_string())
        }
        ("GET", p) if p == roles && imds => (200, "efrlhf-role\n".to_string()),
        ("GET", p) if p == format!("{roles}efrlhf-role") && imds => {
            (200, keys("ASIAIMDSKEYEXAMPLE", "IMDS-ROLE-TOKEN"))
        }
        ("GET", "/container") if header("authorization") == "container-auth" => {
            (200, keys("ASIACONTAINEREXAMPLE", "CONTAINER-TOKEN"))
        }
        ("GET", "/container") | ("GET", "/latest/api/token") => (401, String::new()),
        _ if path.starts_with("/latest/") => (401, String::new()),
        _ => {
            seen.lock().unwrap().push(format!("{method} {path}"));
            (404, "<Error><Code>NoSuchKey</Code></Error>".to_string())
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn s3_keys_come_from_a_container_endpoint_or_the_instance_metadata_service() {
    let (stub, seen) = metadata_stub();
    let s = sandbox("remote-s3-keys", "");
    let none = s.path("no-such-file").display().to_string();
    let remote = "--remote=s3://team/keys";
    let base = [
        ("AWS_ENDPOINT_URL", stub.as_str()),
        ("AWS_SHARED_CREDENTIALS_FILE", none.as_str()),
        ("AWS_CONFIG_FILE", none.as_str()),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", stub.as_str()),
    ];
    let signed_with = |extra: &[(&str, &str)]| {
        seen.lock().unwrap().clear();
        let env: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        let out = ok_at(&s, "cache", &["plan", "exp.kdl", remote], &env);
        assert!(!out.contains("stub-secret"), "{out}");
        let requests = seen.lock().unwrap().clone();
        // One manifest looked up per stage whose key is known now: train, val and blob.
        assert_eq!(requests.len(), 3, "{requests:?}");
        requests
    };
    // An instance's role (IMDSv2: a session token first).
    let imds = signed_with(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")]);
    assert!(
        imds.iter()
            .all(|r| r.contains("X-Amz-Credential=ASIAIMDSKEYEXAMPLE")
                && r.contains("X-Amz-Security-Token=IMDS-ROLE-TOKEN")),
        "{imds:?}"
    );
    // A container's endpoint comes before the instance's.
    let container_url = format!("{stub}/container");
    let container = signed_with(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", container_url.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-auth"),
    ]);
    assert!(
        container
            .iter()
            .all(|r| r.contains("X-Amz-Credential=ASIACONTAINEREXAMPLE")),
        "{container:?}"
    );
    // The environment's keys come before both.
    let from_env = signed_with(&[
        ("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
    ]);
    assert!(
        from_env
            .iter()
            .all(|r| r.contains("X-Amz-Credential=AKIAENVEXAMPLE"))
    );
    // None at all: unsigned requests (a public bucket can be pulled from).
    let unsigned = signed_with(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    assert!(
        unsigned.iter().all(|r| !r.contains("X-Amz-Credential")),
        "{unsigned:?}"
    );
}

/// Every manifest under `efrlhf/runs` of bucket `team`, checked with boto3
/// (independently of efrlhf): each object it lists exists with its size.
fn s3_manifests_whole(python: &Path, endpoint: &str) -> (usize, Vec<String>) {
    s3_manifests_prefix(python, endpoint, "efrlhf/runs")
}

/// How many objects under `prefix` were uploaded in parts (S3 gives them an ETag `"...-N"`).
fn s3_multipart_objects(python: &Path, endpoint: &str, prefix: &str) -> usize {
    let script = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="x",
                  aws_secret_access_key="x", region_name="us-east-1")
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="team", Prefix=sys.argv[2]):
    n += sum(1 for o in page.get("Contents", []) if "-" in o["ETag"])
print(n)
"#;
    let out = Command::new(python)
        .args(["-c", script, endpoint, prefix])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn s3_manifests_prefix(python: &Path, endpoint: &str, prefix: &str) -> (usize, Vec<String>) {
    let script = r#"
import json, sys
import boto3
endpoint, prefix = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x",
                  aws_secret_access_key="x", region_name="us-east-1")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="team", Prefix=prefix + "/ac/"):
    keys += [o["Key"] for o in page.get("Contents", [])]
broken = []
for k in keys:
    m = json.loads(s3.get_object(Bucket="team", Key=k)["Body"].read())
    objects = m["artifact"]["files"] + ([m["log"]] if m["log"] else [])
    for o in objects:
        d = o["digest"]
        try:
            size = s3.head_object(Bucket="team", Key=f"{prefix}/cas/{d[:2]}/{d}")["ContentLength"]
            if size != o["size"]:
                broken.append(f"{k}: {d} has {size} bytes, not {o['size']}")
        except Exception as e:
            broken.append(f"{k}: {d} missing ({e})")
print(json.dumps([len(keys), broken]))
"#;
    let out = Command::new(python)
        .args(["-c", script, endpoint, prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (n, broken): (usize, Vec<String>) = serde_json::from_slice(&out.stdout).unwrap();
    (n, broken)
}

/// moto's S3 server on 127.0.0.1 (an in-memory S3), with bucket `team`.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(python: &Path) -> Moto {
        let script = r#"
import sys
from moto.server import ThreadedMotoServer
import boto3
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="x",
             aws_secret_access_key="x", region_name="us-east-1").create_bucket(Bucket="team")
print(f"PORT {port}", flush=True)
sys.stdin.read()
server.stop()
"#;
        let mut child = Command::new(python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("moto did not start").unwrap();
            if let Some(p) = line.strip_prefix("PORT ") {
                break p.trim().to_string();
            }
        };
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3_shares_results_survives_racing_and_killed_pushes_and_keeps_credentials_secret() {
    let Some(python) = python_with("moto.server, boto3") else {
        return;
    };
    let moto = Moto::start(&python);
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRET";
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "us-east-1"),
        // Files over 5 MiB go up in parts (multipart upload), as those over 16 MiB do by default.
        ("EFRLHF_S3_PART_MIB", "5"),
    ];
    let decl = format!(
        "remote \"s3://team/efrlhf/runs\" endpoint=\"{}\"",
        moto.endpoint
    );
    let s = sandbox("remote-s3", &decl);
    let mut outputs = Vec::new();
    outputs.push(ok_at(&s, "cache-a", &["run", "exp.kdl"], &env));
    outputs.push(ok_at(&s, "cache-a", &["cache", "push", "exp.kdl"], &env));
    assert!(outputs[1].contains("pushed 6 results"), "{}", outputs[1]);
    // Everything under the prefix, nothing outside it.
    // Without an experiment, the remote is named on the command line (the
    // endpoint by the variable AWS's own tools read).
    let by_url = "--remote=s3://team/efrlhf/runs";
    let env_endpoint = [
        env[0],
        env[1],
        env[2],
        env[3],
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
    ];
    let ls = ok_at(&s, "cache-b", &["cache", "ls", by_url], &env_endpoint);
    for st in STAGES {
        assert!(ls.contains(&format!(" {st} ")), "{ls}");
    }
    outputs.push(ls);
    assert_eq!(statuses(&s, "cache-b", &["--remote"], &env), all("remote"));
    outputs.push(ok_at(
        &s,
        "cache-b",
        &["cache", "pull", by_url],
        &env_endpoint,
    ));
    assert!(outputs[3].contains("pulled 6 results"), "{}", outputs[3]);
    assert_eq!(statuses(&s, "cache-b", &[], &env), all("cached"));
    assert_eq!(show_json(&s, "cache-a"), show_json(&s, "cache-b"));
    let events = run_json(&s, "cache-c", &["--remote"], &env);
    assert_eq!(stages_with(&events, "stage-pulled"), STAGES.to_vec());
    // Two pushers of one new result at once (its files 11 MB: three parts each): one manifest, whole.
    let noisy = s
        .read("exp.kdl")
        .replace("    files 8\n    kib 256\n", "    files 2\n    kib 11000\n");
    s.write("exp.kdl", &noisy);
    ok_at(&s, "cache-a", &["run", "exp.kdl", "--only", "blob"], &env);
    let pushers: Vec<Child> = (0..2)
        .map(|_| {
            command(&s, "cache-a", &["cache", "push", "exp.kdl"], &env)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in pushers {
        let out = p.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success() && !err.contains("different result"),
            "{err}"
        );
        outputs.push(err);
    }
    assert_eq!(s3_manifests_whole(&python, &moto.endpoint), (7, Vec::new()));
    assert_eq!(
        s3_multipart_objects(&python, &moto.endpoint, "efrlhf/runs/cas/"),
        2
    );
    let pulled = ok_at(&s, "cache-d", &["cache", "pull", "exp.kdl"], &env);
    assert!(pulled.contains("pulled 6 results"), "{pulled}");
    ok_at(&s, "cache-d", &["cache", "verify"], &env);
    outputs.push(pulled);
    // Pushes to a fresh prefix killed at random moments: never a manifest without its objects.
    let fresh = decl.replace("efrlhf/runs", "efrlhf/killed");
    s.write("exp.kdl", &s.read("exp.kdl").replace(&decl, &fresh));
    let t0 = Instant::now();
    ok_at(
        &s,
        "cache-a",
        &[
            "cache",
            "push",
            "exp.kdl",
            "--remote=s3://team/efrlhf/timing",
        ],
        &env_endpoint,
    );
    let whole = t0.elapsed().as_millis() as u64;
    let check = || s3_manifests_prefix(&python, &moto.endpoint, "efrlhf/killed");
    kill_pushes(&s, &env, whole, &check, None);
    ok_at(&s, "cache-a", &["cache", "push", "exp.kdl"], &env);
    assert_eq!(
        s3_manifests_prefix(&python, &moto.endpoint, "efrlhf/killed"),
        (6, Vec::new())
    );
    // No secret in any output or stored file.
    for text in &outputs {
        assert!(!text.contains(secret), "{text}");
    }
    for cache in ["cache-a", "cache-b", "cache-c", "cache-d"] {
        assert!(
            !all_text_below(&s.path(cache)).contains(secret),
            "secret stored in {cache}"
        );
    }
}
