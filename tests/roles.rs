//! Inputs by role: a wrong wiring of any built-in kind is a plan-time error
//! at the input's file:line:column, with what the input is and what the
//! role needs; right wirings, by format or by `role=`, plan.

mod common;
use common::*;

/// The stages every case starts from: one of each built-in kind, wired right.
fn base() -> String {
    format!(
        r#"stage "prefs" kind="dataset" {{
    source "opinpref" path="{}"
}}
stage "tok" kind="tokenizer" {{
    input "prefs"
}}
stage "sft" kind="sft" {{
    input "prefs" "tok"
}}
stage "phi" kind="reward-model" {{
    input "prefs"
}}
stage "feat" kind="featurize" {{
    input "prefs"
}}
stage "ppo" kind="ppo" {{
    input "sft" "phi" "prefs"
}}
stage "eval" kind="eval" {{
    input "sft" "ppo" role="models"
    input "phi" "prefs"
}}
"#,
        data("opinpref").display()
    )
}

/// `exp.kdl:LINE:COLUMN` of the first `needle` on the last line holding `line_marker`.
fn location(s: &Sandbox, line_marker: &str, needle: &str) -> String {
    let text = s.read("exp.kdl");
    let (i, line) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(line_marker))
        .last()
        .unwrap_or_else(|| panic!("no line with {line_marker:?}"));
    let col = line
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in {line:?}"))
        + 1;
    format!("exp.kdl:{}:{col}", i + 1)
}

/// Plans `base()` plus `extra`; expects exit 2 and returns stderr.
fn plan_fails(name: &str, extra: &str) -> (Sandbox, String) {
    let s = Sandbox::new(name);
    s.experiment(&format!("{}{extra}", base()));
    let out = s.run(&["plan", "exp.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    (s, err)
}

#[test]
fn the_right_wiring_plans_with_roles_by_format_and_by_name() {
    let s = Sandbox::new("roles-ok");
    s.experiment(&base());
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["plan", "exp.kdl", "--json"])).unwrap();
    let stage = |id: &str| {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        stage("ppo")["roles"],
        serde_json::json!({"policy": ["sft"], "reward-model": ["phi"], "datasets": ["prefs"]})
    );
    assert_eq!(
        stage("eval")["roles"],
        serde_json::json!({"models": ["sft", "ppo"], "reward-model": ["phi"], "datasets": ["prefs"]})
    );
    assert_eq!(
        stage("sft")["roles"],
        serde_json::json!({"datasets": ["prefs"], "tokenizer": ["tok"]})
    );
}

#[test]
fn dataset_takes_no_inputs_and_no_roles() {
    let (s, err) = plan_fails(
        "roles-dataset",
        "stage \"d2\" kind=\"dataset\" {\n    input \"prefs\" role=\"datasets\"\n    source \"jsonl\" path=\"exp.kdl\"\n}\n",
    );
    assert!(
        err.contains("kind `dataset` has no named inputs, so no role `datasets`"),
        "{err}"
    );
    assert!(
        err.contains(&location(&s, "input \"prefs\" role=\"datasets\"", "role")),
        "{err}"
    );
}

#[test]
fn tokenizer_rejects_a_reward_model() {
    let (s, err) = plan_fails(
        "roles-tokenizer",
        "stage \"tok2\" kind=\"tokenizer\" {\n    input \"phi\"\n}\n",
    );
    assert!(
        err.contains(
            "input `phi` of `tok2` is a reward model, which no input of kind `tokenizer` takes"
        ),
        "{err}"
    );
    let line = s
        .read("exp.kdl")
        .lines()
        .position(|l| l == "    input \"phi\"")
        .unwrap()
        + 1;
    assert!(err.contains(&format!("exp.kdl:{line}:11")), "{err}");
    assert!(err.contains("`datasets` (a dataset, any number)"), "{err}");
}

#[test]
fn reward_model_rejects_a_tokenizer_in_its_datasets_role() {
    let (s, err) = plan_fails(
        "roles-reward",
        "stage \"rm2\" kind=\"reward-model\" {\n    input \"tok\" role=\"datasets\"\n}\n",
    );
    assert!(
        err.contains("input `tok` of `rm2` is a tokenizer; role `datasets` needs a dataset"),
        "{err}"
    );
    assert!(
        err.contains(&location(&s, "input \"tok\" role=\"datasets\"", "\"tok\"")),
        "{err}"
    );
}

#[test]
fn featurize_rejects_a_model() {
    let (s, err) = plan_fails(
        "roles-featurize",
        "stage \"f2\" kind=\"featurize\" {\n    input \"sft\"\n}\n",
    );
    assert!(
        err.contains("input `sft` of `f2` is a model, which no input of kind `featurize` takes"),
        "{err}"
    );
    let line = s
        .read("exp.kdl")
        .lines()
        .position(|l| l == "stage \"f2\" kind=\"featurize\" {")
        .unwrap()
        + 2;
    assert!(err.contains(&format!("exp.kdl:{line}:11")), "{err}");
}

#[test]
fn sft_takes_one_tokenizer() {
    let (s, err) = plan_fails(
        "roles-sft",
        "stage \"tok2\" kind=\"tokenizer\" {\n    input \"prefs\"\n}\nstage \"sft2\" kind=\"sft\" {\n    input \"prefs\" \"tok\" \"tok2\"\n}\n",
    );
    assert!(
        err.contains("role `tokenizer` of `sft2` takes at most one, and 2 inputs fill it"),
        "{err}"
    );
    assert!(
        err.contains(&location(
            &s,
            "input \"prefs\" \"tok\" \"tok2\"",
            "\"tok2\""
        )),
        "{err}"
    );
}

#[test]
fn ppo_rejects_a_dataset_as_its_reward_model_and_needs_one() {
    let (s, err) = plan_fails(
        "roles-ppo",
        "stage \"ppo2\" kind=\"ppo\" {\n    input \"sft\" \"prefs\"\n    input \"prefs\" role=\"reward-model\"\n}\n",
    );
    assert!(
        err.contains(
            "input `prefs` of `ppo2` is a dataset; role `reward-model` needs a reward model"
        ),
        "{err}"
    );
    assert!(
        err.contains(&location(
            &s,
            "input \"prefs\" role=\"reward-model\"",
            "\"prefs\""
        )),
        "{err}"
    );
    // Without the reward model at all: the stage is named, and what it lacks.
    let (s, err) = plan_fails(
        "roles-ppo-missing",
        "stage \"ppo3\" kind=\"ppo\" {\n    input \"sft\" \"prefs\"\n}\n",
    );
    assert!(
        err.contains("stage `ppo3` has no input for role `reward-model`: kind `ppo` needs exactly one, a reward model"),
        "{err}"
    );
    assert!(
        err.contains(&location(&s, "stage \"ppo3\"", "\"ppo3\"")),
        "{err}"
    );
}

#[test]
fn eval_rejects_a_reward_model_among_its_models_and_suggests_role_names() {
    let (s, err) = plan_fails(
        "roles-eval",
        "stage \"eval2\" kind=\"eval\" {\n    input \"phi\" role=\"models\"\n    input \"prefs\"\n}\n",
    );
    assert!(
        err.contains("input `phi` of `eval2` is a reward model; role `models` needs a model"),
        "{err}"
    );
    assert!(
        err.contains(&location(&s, "input \"phi\" role=\"models\"", "\"phi\"")),
        "{err}"
    );
    let (s, err) = plan_fails(
        "roles-eval-name",
        "stage \"eval3\" kind=\"eval\" {\n    input \"sft\" role=\"model\"\n    input \"prefs\"\n}\n",
    );
    assert!(
        err.contains("kind `eval` has no input role `model`"),
        "{err}"
    );
    assert!(err.contains("did you mean `models`?"), "{err}");
    assert!(
        err.contains(&location(&s, "input \"sft\" role=\"model\"", "role=")),
        "{err}"
    );
}

#[test]
fn a_parameter_relation_is_checked_at_plan_time() {
    let (s, err) = plan_fails(
        "roles-check",
        "stage \"sft4\" kind=\"sft\" {\n    input \"prefs\" \"tok\"\n    d-model 30\n    heads 4\n}\n",
    );
    assert!(
        err.contains("stage `sft4`: `d-model` 30 is not divisible by `heads` 4"),
        "{err}"
    );
    assert!(
        err.contains(&location(&s, "stage \"sft4\"", "\"sft4\"")),
        "{err}"
    );
}
