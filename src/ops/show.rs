//! `show FILE`: every stage and variant with its status and metrics, side by side.

use std::collections::BTreeSet;

use crate::dsl::Metrics;
use crate::exec::{Plan, Status};
use crate::report::{Cell, Table};

use super::variant_columns;

/// Status words: `done` (current result stored), `outdated` (an older result
/// exists; metrics shown are that one's), `failed` (last attempt failed),
/// `not-run`.
fn status_of(plan: &Plan, i: usize) -> (&'static str, Option<&Metrics>) {
    match &plan.statuses[i] {
        Status::Cached(rec) => ("done", Some(&rec.metrics)),
        Status::Run(_) => {
            let prev = plan.previous[i].as_ref();
            let failed_later = plan.failures[i]
                .as_ref()
                .is_some_and(|f| prev.is_none_or(|p| f.finished_at >= p.finished_at));
            if failed_later {
                ("failed", prev.map(|p| &p.metrics))
            } else if let Some(p) = prev {
                ("outdated", Some(&p.metrics))
            } else {
                ("not-run", None)
            }
        }
    }
}

pub fn show_table(plan: &Plan) -> Table {
    let variants = variant_columns(plan);
    let mut metric_names = BTreeSet::new();
    for i in 0..plan.pipeline.nodes.len() {
        if let (_, Some(m)) = status_of(plan, i) {
            metric_names.extend(m.keys().cloned());
        }
    }
    // Short variant columns (`times`) unless they collide with each other or a metric.
    let short: Vec<String> = variants
        .iter()
        .map(|l| l.split_once('.').map(|(_, p)| p).unwrap_or(l).to_string())
        .collect();
    let unique = short.iter().collect::<BTreeSet<_>>().len() == short.len()
        && short.iter().all(|s| !metric_names.contains(s));
    let mut columns = vec![
        "stage".to_string(),
        "kind".to_string(),
        "status".to_string(),
    ];
    columns.extend(if unique {
        short.clone()
    } else {
        variants.clone()
    });
    columns.extend(metric_names.iter().cloned());
    let mut rows = Vec::new();
    for (i, node) in plan.pipeline.nodes.iter().enumerate() {
        let (status, metrics) = status_of(plan, i);
        let mut row = vec![
            Cell::Text(node.id.clone()),
            Cell::Text(node.kind.name.clone()),
            Cell::Text(status.into()),
        ];
        for label in &variants {
            row.push(match node.variant.iter().find(|(l, _)| l == label) {
                Some((_, crate::dsl::Value::Int(x))) => Cell::Number(*x as f64),
                Some((_, crate::dsl::Value::Float(x))) => Cell::Number(*x),
                Some((_, v)) => Cell::Text(v.to_string()),
                None => Cell::Empty,
            });
        }
        for m in &metric_names {
            row.push(
                metrics
                    .and_then(|ms| ms.get(m))
                    .map(|x| Cell::Number(*x))
                    .unwrap_or(Cell::Empty),
            );
        }
        rows.push(row);
    }
    Table { columns, rows }
}

/// `show --format json`: `{"stages": [{"id", "kind", "status", "metrics", "variant"}]}`.
pub fn show_json(plan: &Plan) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = plan
        .pipeline
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (status, metrics) = status_of(plan, i);
            let variant: serde_json::Map<String, serde_json::Value> = node
                .variant
                .iter()
                .map(|(l, v)| (l.clone(), v.to_json()))
                .collect();
            serde_json::json!({
                "id": node.id, "stage": node.stage, "kind": node.kind.name, "status": status,
                "metrics": metrics.cloned().unwrap_or_default(), "variant": variant,
            })
        })
        .collect();
    serde_json::json!({ "experiment": plan.experiment_name(), "stages": stages })
}
