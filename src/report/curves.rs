//! The curves stages log in their result folders (`train_curve.jsonl`,
//! `validation_curve.jsonl`, `ppo_curve.jsonl`, `grpo_curve.jsonl`,
//! `dpo_curve.jsonl`, a reward model's `curve.csv`),
//! read as numeric series for the HTML report and the trackers.

use std::collections::BTreeMap;
use std::path::Path;

/// A curve file's numeric fields, each as (x, value) points.
pub type Curve = BTreeMap<String, Vec<(f64, f64)>>;

/// The curve files stages write, and what their x axis is.
pub const CURVE_FILES: [(&str, &str); 6] = [
    ("train_curve.jsonl", "step"),
    ("validation_curve.jsonl", "step"),
    ("ppo_curve.jsonl", "update"),
    ("grpo_curve.jsonl", "update"),
    ("dpo_curve.jsonl", "step"),
    ("curve.csv", "epoch"),
];

/// A curve file as numeric fields of (x, value) points: JSON lines (nested
/// objects flattened to `extra.rouge1`; x the `step` field, else the line
/// number) or CSV (x the first column). `None` when there is no such file.
pub fn read_curve(path: &Path, x_name: &str) -> Option<Curve> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = Curve::new();
    if path.extension().is_some_and(|e| e == "csv") {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split(',').collect();
        for line in lines {
            let cells: Vec<f64> = line
                .split(',')
                .map(|c| c.trim().parse().unwrap_or(f64::NAN))
                .collect();
            for (name, y) in header.iter().zip(&cells).skip(1) {
                if y.is_finite() && cells[0].is_finite() {
                    fields
                        .entry(name.to_string())
                        .or_default()
                        .push((cells[0], *y));
                }
            }
        }
        return Some(fields);
    }
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let x = v
            .get(x_name)
            .and_then(|x| x.as_f64())
            .unwrap_or((i + 1) as f64);
        let mut flat = Vec::new();
        flatten("", &v, &mut flat);
        for (name, y) in flat.into_iter().filter(|(n, _)| n != x_name) {
            fields.entry(name).or_default().push((x, y));
        }
    }
    Some(fields)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(y) = n.as_f64().filter(|y| y.is_finite()) {
                out.push((prefix.to_string(), y));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_read_jsonl_with_nested_fields_and_csv() {
        let dir = std::env::temp_dir().join(format!("efrlhf-curve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("validation_curve.jsonl");
        std::fs::write(&jsonl, "{\"step\":250,\"loss\":5.5,\"extra\":{\"rougeL\":0.02}}\n{\"step\":500,\"loss\":4.9,\"extra\":{\"rougeL\":0.17},\"note\":\"x\"}\n").unwrap();
        let f = read_curve(&jsonl, "step").unwrap();
        assert_eq!(f["loss"], [(250.0, 5.5), (500.0, 4.9)]);
        assert_eq!(f["extra.rougeL"], [(250.0, 0.02), (500.0, 0.17)]);
        assert_eq!(f.len(), 2);
        let ppo = dir.join("ppo_curve.jsonl");
        std::fs::write(&ppo, "{\"kl\":0.0}\n{\"kl\":1.5}\n").unwrap();
        assert_eq!(
            read_curve(&ppo, "update").unwrap()["kl"],
            [(1.0, 0.0), (2.0, 1.5)]
        );
        let csv = dir.join("curve.csv");
        std::fs::write(&csv, "epoch,loss\n1,0.68\n2,0.58\n").unwrap();
        assert_eq!(
            read_curve(&csv, "epoch").unwrap()["loss"],
            [(1.0, 0.68), (2.0, 0.58)]
        );
        assert!(read_curve(&dir.join("none.csv"), "epoch").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
