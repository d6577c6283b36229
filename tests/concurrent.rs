//! Two runs of one experiment on one cache at the same moment (acceptance 7 of the runner).

mod common;
use common::*;

use std::collections::BTreeMap;

#[test]
fn simultaneous_runs_both_succeed_and_compute_each_key_once() {
    let s = Sandbox::new("concurrent");
    s.experiment(
        r#"
stage "a" kind="tshout" { times 2; sleep 0.4; }
stage "b" kind="tshout" { input "a"; times 1; sleep 0.3; }
stage "c" kind="tshout" { input "a"; times 3; sleep 0.3; }
stage "d" kind="tshout" { input "b" "c"; sleep 0.2; }
"#,
    );
    let spawn = || {
        s.cmd(&["run", "exp.kdl", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let (o1, o2) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for o in [&o1, &o2] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in s.calls() {
        *counts.entry(c).or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            ("a".into(), 1),
            ("b".into(), 1),
            ("c".into(), 1),
            ("d".into(), 1)
        ])
    );
    // Between them, the two runs computed every stage once and reused the rest.
    let e1 = events(&String::from_utf8_lossy(&o1.stdout));
    let e2 = events(&String::from_utf8_lossy(&o2.stdout));
    let mut done = with_event(&e1, "stage-done");
    done.extend(with_event(&e2, "stage-done"));
    done.sort();
    assert_eq!(done, ["a", "b", "c", "d"]);
    assert_eq!(
        with_event(&e1, "stage-done").len() + with_event(&e1, "stage-cached").len(),
        4
    );
    assert_eq!(
        with_event(&e2, "stage-done").len() + with_event(&e2, "stage-cached").len(),
        4
    );
    assert!(s.plan().iter().all(|(_, st)| st == "cached"));
}
