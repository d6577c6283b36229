//! `efrlhf rouge`: ROUGE of a predictions file against a references file.

use std::path::Path;

use crate::error::Diag;
use crate::text::rouge::{MultiRef, RougeScorer, RougeScores, mean};

/// Reads one entry per line: JSONL (`.jsonl`/`.json`: a string, or a list of
/// strings for several references) or plain text (one entry per line).
pub fn read_entries(path: &Path, allow_lists: bool) -> Result<Vec<Vec<String>>, Diag> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diag::input("E-FILE", format!("cannot read `{}`: {e}", path.display())))?;
    let jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !jsonl {
            out.push(vec![line.to_string()]);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| {
            Diag::input(
                "E-ROUGE-INPUT",
                format!("{}:{}: {what}", path.display(), i + 1),
            )
            .with_help("each line is a JSON string; references may also be a list of strings")
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
        match v {
            serde_json::Value::String(s) => out.push(vec![s]),
            serde_json::Value::Array(items) if allow_lists => {
                let refs: Option<Vec<String>> = items
                    .into_iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect();
                let refs = refs.ok_or_else(|| bad("a list that is not all strings"))?;
                if refs.is_empty() {
                    return Err(bad("an empty list of references"));
                }
                out.push(refs);
            }
            _ => {
                return Err(bad(if allow_lists {
                    "expected a string or a list of strings"
                } else {
                    "expected a string"
                }));
            }
        }
    }
    Ok(out)
}

/// Mean scores over examples.
pub fn rouge_files(
    predictions: &Path,
    references: &Path,
    stem: bool,
    how: MultiRef,
) -> Result<(usize, RougeScores), Diag> {
    let preds = read_entries(predictions, false)?;
    let refs = read_entries(references, true)?;
    if preds.len() != refs.len() {
        return Err(Diag::input(
            "E-ROUGE-INPUT",
            format!("{} predictions but {} references", preds.len(), refs.len()),
        )
        .with_help("line i of the predictions goes with line i of the references"));
    }
    let scorer = RougeScorer::new(stem);
    let scores: Vec<RougeScores> = preds
        .iter()
        .zip(&refs)
        .map(|(p, r)| scorer.score_multi(r, &p[0], how))
        .collect();
    Ok((scores.len(), mean(&scores)))
}

pub fn rouge_json(n: usize, s: &RougeScores) -> serde_json::Value {
    let mut v = serde_json::json!({ "n": n });
    for t in RougeScores::TYPES {
        if let Some(x) = s.get(t) {
            v[t] = serde_json::json!({"precision": x.precision, "recall": x.recall, "fmeasure": x.fmeasure});
        }
    }
    v
}

pub fn rouge_text(n: usize, s: &RougeScores) -> String {
    let mut t = crate::report::Table {
        columns: vec![
            "type".into(),
            "precision".into(),
            "recall".into(),
            "f1".into(),
        ],
        rows: vec![],
    };
    for ty in RougeScores::TYPES {
        if let Some(x) = s.get(ty) {
            use crate::report::Cell;
            t.rows.push(vec![
                Cell::Text(ty.into()),
                Cell::Number(x.precision),
                Cell::Number(x.recall),
                Cell::Number(x.fmeasure),
            ]);
        }
    }
    format!("{}means over {n} examples\n", t.to_text())
}
