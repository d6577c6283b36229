//! Bad input: every error names file:line:column, says what is wrong and the
//! fix, exits non-zero, and never panics (acceptance 4 of the runner).

mod common;
use common::*;

/// Runs `plan` on `exp.kdl` and returns (exit code, stderr).
fn plan_error(s: &Sandbox) -> (i32, String) {
    let out = s.run(&["plan", "exp.kdl"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kdl_syntax_error() {
    let s = Sandbox::new("err-syntax");
    s.experiment("stage \"a\" kind=\"tshout\" {\n    times 2\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(err.contains("KDL syntax error"), "{err}");
    assert!(err.contains("exp.kdl:5:"), "{err}");
    assert!(err.contains("help:"), "{err}");
}

#[test]
fn unknown_kind_with_suggestion() {
    let s = Sandbox::new("err-kind");
    s.experiment("stage \"a\" kind=\"tshuot\" {\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(err.contains("unknown stage kind `tshuot`"), "{err}");
    assert!(err.contains("exp.kdl:5:11"), "{err}");
    assert!(err.contains("did you mean `tshout`?"), "{err}");
}

#[test]
fn unknown_parameter_with_did_you_mean() {
    let s = Sandbox::new("err-param");
    s.experiment("stage \"a\" kind=\"tshout\" {\n    tims 2\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown parameter `tims` for kind `tshout`"),
        "{err}"
    );
    assert!(err.contains("exp.kdl:6:5"), "{err}");
    assert!(err.contains("did you mean `times`?"), "{err}");
}

#[test]
fn wrong_type() {
    let s = Sandbox::new("err-type");
    s.experiment("stage \"a\" kind=\"tshout\" {\n    times \"two\"\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(
        err.contains("wrong type for `times`: expected an int but found the string \"two\""),
        "{err}"
    );
    assert!(err.contains("exp.kdl:6:11"), "{err}");
    assert!(err.contains("declared as int"), "{err}");
    // Out of declared range, and a sweep value of the wrong type.
    s.experiment("stage \"a\" kind=\"tshout\" {\n    times -1\n}\nsweep \"s\" {\n    vary \"a.times\" 1 2.5\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(err.contains("below the minimum 0"), "{err}");
    assert!(err.contains("exp.kdl:9:22"), "{err}");
}

#[test]
fn input_naming_an_unknown_stage() {
    let s = Sandbox::new("err-input");
    s.experiment("stage \"alpha\" kind=\"tshout\" {\n}\nstage \"b\" kind=\"tshout\" {\n    input \"alpah\"\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(
        err.contains("stage `b` takes input from unknown stage `alpah`"),
        "{err}"
    );
    assert!(err.contains("exp.kdl:8:11"), "{err}");
    assert!(err.contains("did you mean `alpha`?"), "{err}");
}

#[test]
fn cycle_is_named_stage_by_stage() {
    let s = Sandbox::new("err-cycle");
    s.experiment(
        "stage \"a\" kind=\"tshout\" {\n    input \"c\"\n}\nstage \"b\" kind=\"tshout\" {\n    input \"a\"\n}\nstage \"c\" kind=\"tshout\" {\n    input \"b\"\n}\n",
    );
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(
        err.contains("the stages form a cycle: a -> b -> c -> a"),
        "{err}"
    );
    for line in [
        "exp.kdl:9:11",
        "`b` takes input from `a`",
        "`c` takes input from `b`",
        "`a` takes input from `c`",
    ] {
        assert!(err.contains(line), "missing {line:?} in {err}");
    }
    s.experiment("stage \"a\" kind=\"tshout\" {\n    input \"a\"\n}\n");
    let (_, err) = plan_error(&s);
    assert!(err.contains("cycle: a -> a"), "{err}");
}

#[test]
fn missing_plugin_program() {
    let s = Sandbox::new("err-program");
    s.write(
        "plugins/tshout.kdl",
        &s.read("plugins/tshout.kdl")
            .replace("\"tshout.py\"", "\"tshuot.py\""),
    );
    s.experiment("stage \"a\" kind=\"tshout\" {\n}\n");
    let (code, err) = plan_error(&s);
    assert_ne!(code, 0);
    assert!(err.contains("plugin script `tshuot.py` not found"), "{err}");
    assert!(err.contains("tshout.kdl:4:19"), "{err}");
    s.write(
        "plugins/tshout.kdl",
        &s.read("plugins/tshout.kdl").replace(
            "\"python3\" \"tshuot.py\"",
            "\"no-such-interpreter-xyz\" \"tshout.py\"",
        ),
    );
    let (code, err) = plan_error(&s);
    assert_eq!(code, 3, "a missing program is the environment's fault");
    assert!(
        err.contains("plugin program `no-such-interpreter-xyz` not found"),
        "{err}"
    );
    assert!(err.contains("tshout.kdl:4:9"), "{err}");
    assert!(err.contains("help: install"), "{err}");
}

#[test]
fn several_problems_are_all_reported() {
    let s = Sandbox::new("err-many");
    s.experiment("stage \"a\" kind=\"tshout\" {\n    tims 2\n}\nstage \"b\" kind=\"tshout\" {\n    input \"x\"\n    fail 1\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(
        err.contains("`tims`") && err.contains("`x`") && err.contains("expected a bool"),
        "{err}"
    );
    assert!(err.contains("3 problems found"), "{err}");
}

#[test]
fn bad_manifest_and_bad_sweep_point_at_their_files() {
    let s = Sandbox::new("err-manifest");
    s.write("plugins/broken.kdl", "plugin \"broken\" {\n    param \"x\" type=\"integer\"\n    run \"python3\" \"tshout.py\"\n}\n");
    s.experiment("stage \"a\" kind=\"tshout\" {\n}\n");
    let (code, err) = plan_error(&s);
    assert_eq!(code, 2);
    assert!(err.contains("unknown parameter type `integer`"), "{err}");
    assert!(err.contains("broken.kdl:2:15"), "{err}");
    std::fs::remove_file(s.path("plugins/broken.kdl")).unwrap();
    s.experiment("stage \"a\" kind=\"tshout\" {\n}\nsweep \"s\" {\n    vary \"a.tmes\" 1 2\n}\n");
    let (_, err) = plan_error(&s);
    assert!(
        err.contains("did you mean `times`?") && err.contains("exp.kdl:8:10"),
        "{err}"
    );
}

#[test]
fn missing_experiment_file_is_a_clear_error() {
    let s = Sandbox::new("err-nofile");
    let out = s.run(&["run", "nope.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read `nope.kdl`"));
}
