//! Nothing lost, nothing stale, no crash or hang: one test per class of the
//! reliability issue, each named after what it guards against.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const AB: &str = r#"
stage "a" kind="tshout" {
    times 2
}
stage "b" kind="tshout" {
    input "a"
    times 3
}
"#;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &Child, sig: i32) {
    unsafe { kill(child.id() as i32, sig) };
}

fn wait_for(what: &str, secs: u64, ready: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The stored folder holding `file` whose text is `text`.
fn stored(s: &Sandbox, file: &str, text: &str) -> PathBuf {
    std::fs::read_dir(s.path("cache/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p.join(file)).is_ok_and(|t| t == text))
        .unwrap_or_else(|| panic!("no stored `{file}` with {text:?}"))
}

/// Rewrites a stored file with the same size and modification time.
fn flip_keeping_size_and_mtime(path: &Path) {
    make_writable(path.parent().unwrap());
    let meta = std::fs::metadata(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] = if bytes[0] == b'x' { b'y' } else { b'x' };
    std::fs::write(path, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), meta.len());
}

fn status_of(s: &Sandbox, id: &str) -> String {
    s.plan()
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, st)| st)
        .unwrap()
}

// 1. `cache gc` and runs.

#[test]
fn gc_while_a_run_uses_its_results_waits_and_the_run_finishes() {
    let s = Sandbox::new("rel-gc-other");
    s.experiment(&format!(
        "{AB}stage \"c\" kind=\"tshout\" {{\n    input \"b\"\n    sleep 1.5\n    marker \"{}\"\n}}\n",
        s.path("c.pid").display()
    ));
    s.write(
        "other.kdl",
        "experiment \"other\" {\n    plugins \"plugins\"\n}\nstage \"z\" kind=\"tshout\" {\n    times 9\n}\n",
    );
    let run = s
        .cmd(&["run", "exp.kdl"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("stage c started", 60, || s.path("c.pid").exists());
    let t0 = Instant::now();
    let gc = s.run(&["cache", "gc", "other.kdl"]);
    let gc_took = t0.elapsed();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "the run lost an input to gc");
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(
        String::from_utf8_lossy(&gc.stderr).contains("waiting for the experiments running"),
        "gc said nothing about waiting"
    );
    assert!(
        gc_took > Duration::from_millis(500),
        "gc did not wait: {gc_took:?}"
    );
    // gc ran after the run: it removed the run's results (other.kdl does not use them), consistently.
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 0 artifacts intact");
}

#[test]
fn gc_of_the_same_experiment_keeps_what_a_run_commits_meanwhile() {
    let s = Sandbox::new("rel-gc-same");
    s.experiment(&format!(
        "{AB}stage \"c\" kind=\"tshout\" {{\n    input \"b\"\n    sleep 1.0\n    marker \"{}\"\n}}\n",
        s.path("c.pid").display()
    ));
    let run = s
        .cmd(&["run", "exp.kdl"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("stage c started", 60, || s.path("c.pid").exists());
    let gc = s.run(&["cache", "gc", "exp.kdl"]);
    assert!(run.wait_with_output().unwrap().status.success());
    assert!(gc.status.success());
    // c repeats b's text once: they share one stored result.
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 2 artifacts intact");
    assert!(
        s.plan().iter().all(|(_, st)| st == "cached"),
        "{:?}",
        s.plan()
    );
}

// 2. Bit rot, extra files, links.

#[test]
fn a_flipped_byte_with_size_and_mtime_kept_is_recomputed_before_it_is_consumed() {
    let s = Sandbox::new("rel-bitrot");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    flip_keeping_size_and_mtime(&stored(&s, "text.txt", "HELLO HELLO").join("text.txt"));
    // Nothing consumes `a` yet: a no-op run does not hash it (verify does).
    assert_ne!(s.run(&["cache", "verify"]).status.code(), Some(0));
    s.experiment(&AB.replace("times 3", "times 2"));
    let text = s.ok(&["explain", "exp.kdl", "a"]);
    assert!(
        text.contains("damaged") && text.contains("text.txt"),
        "{text}"
    );
    s.clear_calls();
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-done"), ["a", "b"]);
    assert_eq!(s.calls(), ["a", "b"]);
    let b = stored(&s, "text.txt", "HELLO HELLO HELLO HELLO");
    assert!(b.exists(), "b read the recomputed, intact `a`");
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 3 artifacts intact");
}

#[test]
fn an_extra_file_or_a_link_in_a_stored_result_makes_it_damaged() {
    let s = Sandbox::new("rel-extra");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    // An extra file: reused by nothing, recomputed.
    let a = stored(&s, "text.txt", "HELLO HELLO");
    make_writable(&a);
    std::fs::write(a.join("extra.txt"), "x").unwrap();
    assert_eq!(status_of(&s, "a"), "run");
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 2 artifacts intact");
    // A stored file replaced by a link to an identical copy outside the cache.
    let a = stored(&s, "text.txt", "HELLO HELLO");
    make_writable(&a);
    std::fs::copy(a.join("text.txt"), s.path("copy.txt")).unwrap();
    std::fs::remove_file(a.join("text.txt")).unwrap();
    std::os::unix::fs::symlink(s.path("copy.txt"), a.join("text.txt")).unwrap();
    assert_eq!(status_of(&s, "a"), "run");
    let verify = s.run(&["cache", "verify"]);
    assert!(String::from_utf8_lossy(&verify.stdout).contains("a link, not a plain file"));
    s.ok(&["run", "exp.kdl"]);
    // The whole result folder replaced by a link to a copy.
    let a = stored(&s, "text.txt", "HELLO HELLO");
    let copy = s.path("copy-dir");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["text.txt", "metrics.json"] {
        std::fs::copy(a.join(f), copy.join(f)).unwrap();
    }
    make_writable(&a);
    std::fs::remove_dir_all(&a).unwrap();
    std::os::unix::fs::symlink(&copy, &a).unwrap();
    assert_eq!(status_of(&s, "a"), "run");
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(s.ok(&["cache", "verify"]).trim(), "all 2 artifacts intact");
}

// 3. The index.

fn fill_index_with(s: &Sandbox, damage: &str) {
    let index = s.path("cache/index");
    match damage {
        "garbage" => {
            for e in std::fs::read_dir(&index).unwrap().flatten() {
                if e.path().is_file() {
                    std::fs::write(e.path(), vec![0xa5u8; 4096]).unwrap();
                }
            }
        }
        "truncated" => {
            for e in std::fs::read_dir(&index).unwrap().flatten() {
                if e.path().is_file() {
                    std::fs::File::options()
                        .write(true)
                        .open(e.path())
                        .unwrap()
                        .set_len(7)
                        .unwrap();
                }
            }
        }
        "a file" => {
            std::fs::remove_dir_all(&index).unwrap();
            std::fs::write(&index, "not a database").unwrap();
        }
        "deleted" => std::fs::remove_dir_all(&index).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn a_damaged_or_deleted_index_is_rebuilt_from_the_results_records() {
    for damage in ["garbage", "truncated", "a file", "deleted"] {
        let s = Sandbox::new(&format!("rel-index-{}", damage.replace(' ', "-")));
        s.experiment(AB);
        s.ok(&["run", "exp.kdl"]);
        fill_index_with(&s, damage);
        let out = s.run(&["cache", "verify"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{damage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "all 2 artifacts intact",
            "{damage}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("rebuilt the index from 2 result record(s)"),
            "{damage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.clear_calls();
        let ev = s.run_events(&[]);
        assert_eq!(
            with_event(&ev, "stage-cached"),
            ["a", "b"],
            "{damage}: recomputed"
        );
        assert!(s.calls().is_empty());
    }
}

#[test]
fn cache_repair_rebuilds_the_index_on_demand() {
    let s = Sandbox::new("rel-repair");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    let text = s.ok(&["cache", "repair"]);
    assert_eq!(text.trim(), "rebuilt the index from 2 result record(s)");
    assert!(s.plan().iter().all(|(_, st)| st == "cached"));
}

// 4. Orphans.

#[test]
fn a_grandchild_of_a_killed_run_dies_with_it() {
    let s = Sandbox::new("rel-orphan");
    // The stage's real work is a grandchild of the runner.
    s.wrapper_plugin("echo wrapper done\n");
    s.experiment(&format!(
        "stage \"w\" kind=\"twrap\" {{\n    sleep 30.0\n    marker \"{}\"\n}}\n",
        s.path("w.pid").display()
    ));
    let marker = s.path("w.pid");
    s.kill_run_when(|| marker.exists());
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the grandchild to die", 10, || !alive(pid));
    // The rerun computes in an attempt folder of its own, and succeeds.
    std::fs::remove_file(&marker).unwrap();
    let out = s
        .cmd(&["run", "exp.kdl"])
        .env("EFRLHF_TEST_NOSLEEP", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(files_below(&s.path("cache/tmp")).is_empty());
}

// 5. Signals.

fn interrupt_with(sig: i32, name: &str, code: i32) {
    let s = Sandbox::new(&format!("rel-signal-{name}"));
    s.experiment(&format!(
        "{AB}stage \"slow\" kind=\"tshout\" {{\n    input \"a\"\n    sleep 30.0\n    marker \"{}\"\n}}\n",
        s.path("slow.pid").display()
    ));
    let child = s
        .cmd(&["run", "exp.kdl", "--json", "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the slow stage", 60, || s.path("slow.pid").exists());
    let pid: i32 = std::fs::read_to_string(s.path("slow.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the run took {:?} to stop",
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(code));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "run-done");
    assert_eq!(last["interrupted"], name);
    let ev = events(&stdout);
    assert_eq!(with_event(&ev, "stage-interrupted"), ["slow"]);
    wait_for("the stage program to stop", 5, || !alive(pid));
    assert!(files_below(&s.path("cache/tmp")).is_empty(), "scratch left");
    // What finished is kept; the interrupted stage runs again.
    let plan = s.plan();
    assert!(plan.contains(&("a".into(), "cached".into())), "{plan:?}");
    assert!(plan.contains(&("slow".into(), "run".into())), "{plan:?}");
}

#[test]
fn sigint_stops_the_run_says_what_it_kept_and_exits_130() {
    interrupt_with(2, "SIGINT", 130);
}

#[test]
fn sigterm_stops_the_run_and_exits_143() {
    interrupt_with(15, "SIGTERM", 143);
}

// 6. NaN, and sizes that cannot work.

#[test]
fn a_nan_loss_fails_the_stage_naming_the_step_and_the_setting() {
    let s = Sandbox::new("rel-nan");
    let body = format!(
        "stage \"prefs\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\nstage \"phi\" kind=\"reward-model\" {{\n    input \"prefs\"\n    lr 1e30\n    epochs 2\n}}\n",
        data("opinpref").display()
    );
    s.experiment(&body);
    let out = s.run(&["run", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("training diverged") && err.contains("after epoch 1"),
        "{err}"
    );
    assert!(err.contains("lower `lr` (now 1e30)"), "{err}");
    assert_eq!(
        status_of(&s, "phi"),
        "run",
        "a diverged result is not stored"
    );
    // A weight decay that blows up fails the same way.
    s.experiment(&body.replace("lr 1e30", "weight-decay 1e308"));
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sizes_that_cannot_work_are_plan_time_errors() {
    let s = Sandbox::new("rel-sizes");
    let p = data("opinpref");
    for (kind, line) in [
        ("reward-model", "hidden -3"),
        ("reward-model", "hidden 0"),
        ("reward-model", "hidden 5 0 5"),
        ("reward-model", "hidden 99999999999"),
        ("reward-model", "epochs 9223372036854775807"),
        ("featurize", "distill-hidden 0"),
        ("tokenizer", "vocab-size 2000000000"),
        ("tokenizer", "vocab-size 9223372036854775807"),
    ] {
        s.experiment(&format!(
            "stage \"prefs\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\nstage \"x\" kind=\"{kind}\" {{\n    input \"prefs\"\n    {line}\n}}\n",
            p.display()
        ));
        let out = s.run(&["plan", "exp.kdl"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind} {line}: {err}");
        assert!(err.contains("exp.kdl:10:"), "{kind} {line}: {err}");
    }
}

// 7. The front end.

fn plan_fails_quickly(s: &Sandbox, text: &[u8]) -> String {
    std::fs::write(s.path("exp.kdl"), text).unwrap();
    let t0 = Instant::now();
    let out = s.run(&["plan", "exp.kdl"]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "plan took {:?}",
        t0.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

#[test]
fn huge_names_deep_nesting_and_huge_files_are_located_errors() {
    let s = Sandbox::new("rel-front");
    let long = format!("stage \"{}\" kind=\"tshout\" {{\n}}\n", "s".repeat(65_536));
    let err = plan_fails_quickly(&s, long.as_bytes());
    assert!(
        err.contains("invalid stage name") && err.contains("exp.kdl:1:7"),
        "{err}"
    );
    let deep = format!("stage \"a\" kind=\"tshout\" {}\n", "{ x ".repeat(2_000));
    let err = plan_fails_quickly(&s, deep.as_bytes());
    assert!(
        err.contains("children nest more than 64 deep") && err.contains("exp.kdl:1:"),
        "{err}"
    );
    let comments = format!("stage \"a\" kind=\"tshout\"\n{}\n", "/* ".repeat(5_000));
    let err = plan_fails_quickly(&s, comments.as_bytes());
    assert!(
        err.contains("comments nest more than 64 deep") && err.contains("exp.kdl:2:"),
        "{err}"
    );
    let big = format!(
        "// {}\nstage \"a\" kind=\"tshout\"\n",
        "c".repeat(10_000_000)
    );
    let err = plan_fails_quickly(&s, big.as_bytes());
    assert!(err.contains("at most 1048576"), "{err}");
}

#[test]
fn a_path_that_is_a_device_or_a_fifo_is_refused_at_once() {
    let s = Sandbox::new("rel-devices");
    let fifo = s.path("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for target in ["/dev/zero", "/dev/urandom", fifo.to_str().unwrap()] {
        let text = format!(
            "experiment \"t\" {{\n    seed 7\n}}\nstage \"d\" kind=\"dataset\" {{\n    source \"jsonl\" path=\"{target}\"\n}}\n"
        );
        let err = plan_fails_quickly(&s, text.as_bytes());
        assert!(
            err.contains("is neither a regular file nor a folder"),
            "{target}: {err}"
        );
        assert!(err.contains("exp.kdl:5:"), "{target}: {err}");
    }
    // The experiment file itself.
    let out = s.run(&["plan", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn invalid_utf8_is_reported_with_line_and_column() {
    let s = Sandbox::new("rel-utf8");
    let err = plan_fails_quickly(
        &s,
        b"experiment \"t\" {\n}\nstage \"a\xff\" kind=\"tshout\" {\n}\n",
    );
    assert!(
        err.contains("exp.kdl:3:9: the text is not UTF-8 (byte 0xff)"),
        "{err}"
    );
    // In a JSONL dataset: the row's line and column.
    std::fs::write(
        s.path("d.jsonl"),
        b"{\"id\": \"1\", \"reviews\": [\"ok\"]}\n{\"id\": \"2\", \"reviews\": [\"b\xffd\"]}\n",
    )
    .unwrap();
    s.experiment("stage \"d\" kind=\"dataset\" {\n    source \"jsonl\" path=\"d.jsonl\"\n}\n");
    let out = s.run(&["run", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("d.jsonl:2: not UTF-8 at column 27 (byte 0xff)"),
        "{err}"
    );
}

// 8. The plot's path.

#[test]
fn an_experiment_name_cannot_escape_the_working_folder() {
    let s = Sandbox::new("rel-escape");
    let err = plan_fails_quickly(
        &s,
        b"experiment \"../../outside\" {\n}\nstage \"a\" kind=\"tshout\" {\n}\n",
    );
    assert!(
        err.contains("invalid experiment name") && err.contains("exp.kdl:1:12"),
        "{err}"
    );
}

// 9. Smaller ones.

#[test]
fn cache_verify_exits_1_on_damage_and_a_missing_depends_exits_2() {
    let s = Sandbox::new("rel-small-exit");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    flip_keeping_size_and_mtime(&stored(&s, "text.txt", "HELLO HELLO").join("text.txt"));
    assert_eq!(s.run(&["cache", "verify"]).status.code(), Some(1));
    let manifest = s.read("plugins/tshout.kdl");
    s.write(
        "plugins/tshout.kdl",
        &manifest.replace(
            "    run \"python3\" \"tshout.py\"",
            "    run \"python3\" \"tshout.py\"\n    depends \"helpers.py\"",
        ),
    );
    let out = s.run(&["plan", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("declared dependency `helpers.py` not found"),
        "{err}"
    );
}

#[test]
fn empty_files_duplicate_ids_and_a_bom_in_datasets() {
    let s = Sandbox::new("rel-small-data");
    std::fs::write(s.path("empty.jsonl"), "").unwrap();
    s.experiment("stage \"d\" kind=\"dataset\" {\n    source \"jsonl\" path=\"empty.jsonl\"\n}\n");
    let err = String::from_utf8_lossy(&s.run(&["run", "exp.kdl"]).stderr).into_owned();
    assert!(
        err.contains("no products in") && err.contains("empty.jsonl"),
        "{err}"
    );
    std::fs::write(
        s.path("dup.jsonl"),
        "{\"id\": \"p\", \"reviews\": [\"a\"]}\n{\"id\": \"q\", \"reviews\": [\"b\"]}\n{\"id\": \"p\", \"reviews\": [\"c\"]}\n",
    )
    .unwrap();
    s.experiment("stage \"d\" kind=\"dataset\" {\n    source \"jsonl\" path=\"dup.jsonl\"\n}\n");
    let err = String::from_utf8_lossy(&s.run(&["run", "exp.kdl"]).stderr).into_owned();
    assert!(
        err.contains("dup.jsonl:3: duplicate product id `p` (first at"),
        "{err}"
    );
    assert!(err.contains("dup.jsonl:1)"), "{err}");
    std::fs::write(
        s.path("bom.jsonl"),
        "\u{feff}{\"id\": \"p\", \"reviews\": [\"a\"]}\n",
    )
    .unwrap();
    s.experiment("stage \"d\" kind=\"dataset\" {\n    source \"jsonl\" path=\"bom.jsonl\"\n}\n");
    s.ok(&["run", "exp.kdl"]);
    assert_eq!(s.stage_metrics("d")["products"], 1.0);
}

#[test]
fn limit_with_a_resplit_keeps_the_fractions_of_the_limited_products() {
    let s = Sandbox::new("rel-small-limit");
    s.experiment(&format!(
        "stage \"d\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n    validation-fraction 0.2\n    limit 120\n}}\n",
        data("opinpref").display()
    ));
    s.ok(&["run", "exp.kdl"]);
    let m = s.stage_metrics("d");
    assert_eq!(m["products"], 120.0);
    assert_eq!(m["split.train"], 96.0, "{m}");
    assert_eq!(m["split.validation"], 24.0, "{m}");
}

#[test]
fn every_stored_result_keeps_its_own_record_and_gc_removes_it_with_the_result() {
    let s = Sandbox::new("rel-records");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    let records = files_below(&s.path("cache/records"));
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        let v: serde_json::Value =
            serde_json::from_str(&s.read(&format!("cache/records/{r}"))).unwrap();
        let digest = v["artifact"]["digest"].as_str().unwrap();
        assert!(s.path(&format!("cache/artifacts/{digest}")).is_dir());
        assert_eq!(v["run"]["output"], digest);
    }
    s.experiment(&AB.replace("times 3", "times 5"));
    s.ok(&["run", "exp.kdl"]);
    s.ok(&["cache", "gc", "exp.kdl"]);
    assert_eq!(files_below(&s.path("cache/records")).len(), 2);
}

#[test]
fn a_cache_from_before_records_gets_them_and_can_then_be_repaired() {
    let s = Sandbox::new("rel-backfill");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    std::fs::remove_dir_all(s.path("cache/records")).unwrap();
    s.ok(&["plan", "exp.kdl"]);
    assert_eq!(files_below(&s.path("cache/records")).len(), 2);
    fill_index_with(&s, "deleted");
    s.clear_calls();
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-cached"), ["a", "b"]);
    assert!(s.calls().is_empty());
}
