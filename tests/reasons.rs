//! Why a stage reruns, typed: `plan --json` reasons as tagged objects, and
//! `explain` naming the part of an implementation that changed.

mod common;
use common::*;

const AB: &str = r#"
stage "a" kind="tshout" {
    times 2
}
stage "b" kind="tshout" {
    input "a"
    times 1
}
"#;

fn plan_json(s: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["plan", "exp.kdl", "--json"])).unwrap()
}

#[test]
fn plan_json_gives_each_reason_as_a_tagged_object() {
    let s = Sandbox::new("reasons-typed");
    s.experiment(AB);
    let v = plan_json(&s);
    assert_eq!(
        v["stages"][0]["reason"],
        serde_json::json!({"kind": "never-run"})
    );
    assert_eq!(
        v["stages"][1]["reason"],
        serde_json::json!({"kind": "upstream-reruns", "stages": ["a"]})
    );
    s.ok(&["run", "exp.kdl"]);
    let v = plan_json(&s);
    assert_eq!(v["stages"][0]["status"], "cached");
    assert_eq!(v["stages"][0]["reason"], serde_json::Value::Null);
    assert_eq!(v["stages"][0]["reasons"], serde_json::json!([]));
    s.experiment(&AB.replace("times 1", "times 2"));
    let v = plan_json(&s);
    assert_eq!(
        v["stages"][1]["reason"],
        serde_json::json!({"kind": "param-changed", "param": "times", "from": 1, "to": 2})
    );
    assert_eq!(v["stages"][1]["message"], "param `times`: 1 -> 2");
    // An upstream change with one of its own: both, in order.
    s.experiment(
        &AB.replace("times 2\n", "times 3\n")
            .replace("times 1", "times 2"),
    );
    let v = plan_json(&s);
    assert_eq!(
        v["stages"][1]["reasons"],
        serde_json::json!([
            {"kind": "upstream-reruns", "stages": ["a"]},
            {"kind": "param-changed", "param": "times", "from": 1, "to": 2}
        ])
    );
}

#[test]
fn explain_names_the_file_of_an_implementation_that_changed() {
    let s = Sandbox::new("reasons-implementation");
    s.experiment(AB);
    s.ok(&["run", "exp.kdl"]);
    let program = s.read("plugins/tshout.py");
    s.write(
        "plugins/tshout.py",
        &format!("{program}\nTIMES_LIMIT = 1000\n"),
    );
    let text = s.ok(&["explain", "exp.kdl", "a"]);
    assert!(
        text.contains("the implementation of `tshout` changed: tshout.py"),
        "{text}"
    );
    let v = plan_json(&s);
    assert_eq!(
        v["stages"][0]["reason"],
        serde_json::json!({"kind": "implementation-changed", "of_kind": "tshout", "parts": ["tshout.py"]})
    );
    // Documentation is not behaviour: a manifest doc change reruns nothing.
    s.write("plugins/tshout.py", &program);
    let manifest = s.read("plugins/tshout.kdl");
    s.write(
        "plugins/tshout.kdl",
        &manifest.replace("doc \"", "doc \"Now documented: "),
    );
    let v = plan_json(&s);
    assert_eq!(v["stages"][0]["status"], "cached", "{v}");
}

#[test]
fn an_external_kind_may_declare_roles() {
    let s = Sandbox::new("reasons-external-roles");
    let manifest = s.read("plugins/tshout.kdl");
    let with_roles = manifest
        .lines()
        .filter(|l| !l.trim_start().starts_with("inputs"))
        .collect::<Vec<_>>()
        .join("\n")
        .replacen("plugin \"tshout\"", "plugin \"tpair\"", 1)
        .replace(
            "    run ",
            "    input \"left\" format=\"files\"\n    input \"right\" format=\"files\" optional=#true\n    run ",
        );
    s.write("plugins/tpair.kdl", &with_roles);
    s.experiment(
        "stage \"a\" kind=\"tshout\" {\n}\nstage \"b\" kind=\"tshout\" {\n}\nstage \"p\" kind=\"tpair\" {\n    input \"a\" role=\"left\"\n    input \"b\" role=\"right\"\n}\n",
    );
    let v = plan_json(&s);
    assert_eq!(
        v["stages"][2]["roles"],
        serde_json::json!({"left": ["a"], "right": ["b"]})
    );
    // A lone input of the format fills the one role that must be filled.
    s.experiment(
        "stage \"a\" kind=\"tshout\" {\n}\nstage \"p\" kind=\"tpair\" {\n    input \"a\"\n}\n",
    );
    let v = plan_json(&s);
    assert_eq!(v["stages"][1]["roles"], serde_json::json!({"left": ["a"]}));
    // Two files inputs without `role=` are ambiguous, and the error says how to choose.
    s.experiment(
        "stage \"a\" kind=\"tshout\" {\n}\nstage \"b\" kind=\"tshout\" {\n}\nstage \"p\" kind=\"tpair\" {\n    input \"a\" \"b\"\n}\n",
    );
    let out = s.run(&["plan", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("input `a` of `p` could fill roles `left` or `right`"),
        "{err}"
    );
    assert!(err.contains("input \"a\" role=\"left\""), "{err}");
}
