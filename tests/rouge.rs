//! ROUGE against values recorded from Google's `rouge-score` 0.1.2 (NLTK 3.10.4)
//! by tests/fixtures/rouge/make_rouge_fixture.py, on FewSum and AceSum outputs
//! against their human references plus hand-made edge cases.

use efrlhf::text::rouge::{MultiRef, RougeScorer, RougeScores};

const TYPES: [&str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];

fn rows() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rouge/expected.jsonl"
    ))
    .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn compare(id: &str, got: &RougeScores, want: &serde_json::Value, bad: &mut Vec<String>) {
    for t in TYPES {
        let g = got.get(t).unwrap();
        let w: Vec<f64> = want[t]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (name, a, b) in [
            ("precision", g.precision, w[0]),
            ("recall", g.recall, w[1]),
            ("fmeasure", g.fmeasure, w[2]),
        ] {
            if (a - b).abs() > 1e-6 {
                bad.push(format!("{id} {t} {name}: ours {a}, rouge-score {b}"));
            }
        }
    }
}

#[test]
fn equals_rouge_score_with_and_without_stemming() {
    let stem = RougeScorer::new(true);
    let nostem = RougeScorer::new(false);
    let mut bad = Vec::new();
    let mut pairs = 0;
    for row in rows().iter().filter(|r| r.get("target").is_some()) {
        let (id, t, p) = (
            row["id"].as_str().unwrap(),
            row["target"].as_str().unwrap(),
            row["prediction"].as_str().unwrap(),
        );
        compare(id, &stem.score(t, p), &row["stem"], &mut bad);
        compare(id, &nostem.score(t, p), &row["nostem"], &mut bad);
        pairs += 1;
    }
    assert!(pairs >= 300, "only {pairs} pairs in the fixture");
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn multi_reference_max_equals_score_multi() {
    let stem = RougeScorer::new(true);
    let mut bad = Vec::new();
    let mut n = 0;
    for row in rows().iter().filter(|r| r.get("targets").is_some()) {
        let targets: Vec<String> = row["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        let got = stem.score_multi(&targets, row["prediction"].as_str().unwrap(), MultiRef::Max);
        compare(
            row["id"].as_str().unwrap(),
            &got,
            &row["multi_stem"],
            &mut bad,
        );
        n += 1;
    }
    assert_eq!(n, 20);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn rouge_command_reports_means_as_json() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rouge-cmd");
    std::fs::create_dir_all(&dir).unwrap();
    // Two predictions with several references each (JSONL), and the same as plain lines.
    let all = rows();
    let multi: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| r.get("targets").is_some())
        .take(2)
        .collect();
    let preds: Vec<String> = multi
        .iter()
        .map(|r| serde_json::to_string(&r["prediction"]).unwrap())
        .collect();
    let refs: Vec<String> = multi
        .iter()
        .map(|r| serde_json::to_string(&r["targets"]).unwrap())
        .collect();
    std::fs::write(dir.join("p.jsonl"), preds.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("r.jsonl"), refs.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_efrlhf"))
        .args(["rouge", "--predictions"])
        .arg(dir.join("p.jsonl"))
        .arg("--references")
        .arg(dir.join("r.jsonl"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 2);
    for t in TYPES {
        for (k, key) in ["precision", "recall", "fmeasure"].iter().enumerate() {
            let want = (multi[0]["multi_stem"][t][k].as_f64().unwrap()
                + multi[1]["multi_stem"][t][k].as_f64().unwrap())
                / 2.0;
            let got = v[t][key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-9, "{t} {key}: {got} vs {want}");
        }
    }
    // Mismatched line counts are an input error, not a panic.
    std::fs::write(dir.join("one.txt"), "just one line\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_efrlhf"))
        .args(["rouge", "--predictions"])
        .arg(dir.join("p.jsonl"))
        .arg("--references")
        .arg(dir.join("one.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 predictions but 1 references"));
}
