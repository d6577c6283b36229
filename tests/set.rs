//! `--set STAGE.PARAM=VALUE`: a parameter changed from the command line is
//! part of the key like one written in the file (and leaves the file's result
//! stored), globs set it where the kind has it, a swept parameter gets the
//! sweep's values, and mistakes name the flag.

mod common;
use common::*;

fn experiment(s: &Sandbox) {
    s.experiment(
        r#"
stage "a" kind="tshout" { times 2; }
stage "b" kind="tshout" { input "a"; times 1; }
stage "c" kind="dataset" { source "opinpref" path="data"; split "train"; limit 4; }
sweep "times" {
    vary "b.times" 1 2
}
"#,
    );
    let data = data("opinpref");
    std::os::unix::fs::symlink(&data, s.path("data")).unwrap();
}

fn chars(s: &Sandbox, extra: &[&str]) -> Vec<(String, f64)> {
    let mut args = vec!["show", "exp.kdl", "--format", "json"];
    args.extend_from_slice(extra);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&args)).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "tshout")
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["metrics"]["chars"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_set_value_is_part_of_the_key_and_the_files_result_stays() {
    let s = Sandbox::new("set-key");
    experiment(&s);
    s.ok(&["run", "exp.kdl"]);
    s.clear_calls();
    // `a` three times: "HELLO HELLO HELLO" is 17 characters; b's variants follow.
    let ran = s.run_events(&["--set", "a.times=3"]);
    assert_eq!(
        with_event(&ran, "stage-done"),
        ["a", "b[times=1]", "b[times=2]"]
    );
    assert_eq!(chars(&s, &["--set", "a.times=3"])[0], ("a".into(), 17.0));
    // Without the flag, the file's results are still there.
    assert!(s.plan().iter().all(|(_, st)| st == "cached"));
    assert_eq!(chars(&s, &[])[0], ("a".into(), 11.0));
    // A glob sets it on every matching stage whose kind has it (not the dataset),
    // and on the swept parameter it gives the sweep's values.
    let ran = s.run_events(&["--set", "*.times=3", "--set", "b.times=4 5 6"]);
    assert_eq!(
        with_event(&ran, "stage-done"),
        ["b[times=4]", "b[times=5]", "b[times=6]"]
    );
    assert_eq!(with_event(&ran, "stage-cached"), ["a", "c"]);
}

#[test]
fn set_mistakes_name_the_flag_and_the_fix() {
    let s = Sandbox::new("set-errors");
    experiment(&s);
    let cases = [
        ("a.times", "is not STAGE.PARAM=VALUE"),
        ("x.times=1", "no stage is named `x`"),
        (
            "a.time=1",
            "unknown parameter `time` for kind `tshout` (from `--set a.time=1`)",
        ),
        (
            "a.times=many",
            "wrong type for `times`: expected an int but found the string \"many\" (from `--set a.times=many`)",
        ),
        ("a.times=-1", "(from `--set a.times=-1`)"),
        ("*.tims=1", "no stage matching `*` has a parameter `tims`"),
    ];
    for (set, says) in cases {
        let out = s.run(&["plan", "exp.kdl", "--set", set]);
        assert_eq!(out.status.code(), Some(2), "{set}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "--set {set}:\n{err}");
    }
    let out = s.run(&["plan", "exp.kdl", "--set", "*.tims=1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `times`?"));
}
