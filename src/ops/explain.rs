//! `explain FILE STAGE`: why a stage reruns, from the typed reason the plan computed.

use crate::error::Diags;
use crate::exec::{Plan, Reason, Status};

use super::fmt_time;

pub fn explain(plan: &Plan, stage: &str) -> Result<String, Diags> {
    let targets = plan.pipeline.select(&[stage.to_string()])?;
    let mut out = String::new();
    for i in targets {
        explain_one(plan, i, &mut out);
    }
    Ok(out)
}

fn explain_one(plan: &Plan, i: usize, out: &mut String) {
    let node = &plan.pipeline.nodes[i];
    let head = format!("stage `{}` (kind `{}`)", node.id, node.kind.name);
    match &plan.statuses[i] {
        Status::Cached(rec) => {
            out.push_str(&format!("{head} is up to date: its result is stored\n"));
            out.push_str(&format!("  key      {}\n", rec.key));
            out.push_str(&format!(
                "  computed {} in {:.2}s\n",
                fmt_time(rec.finished_at),
                rec.seconds
            ));
        }
        Status::Remote(rec) => {
            out.push_str(&format!(
                "{head} comes from the remote: its result is not stored here, and `run --remote` pulls it\n"
            ));
            out.push_str(&format!("  key      {}\n", rec.key));
            out.push_str(&format!(
                "  computed {} in {:.2}s (experiment `{}`, stage `{}`)\n",
                fmt_time(rec.finished_at),
                rec.seconds,
                rec.experiment,
                rec.stage_id
            ));
        }
        Status::Run(reason) => {
            out.push_str(&format!("{head} will run: "));
            match reason {
                Reason::New => out.push_str("no earlier run of it is recorded in this cache\n"),
                Reason::Forced => out.push_str("--force asks for it\n"),
                Reason::HubUnresolved(uris) => {
                    out.push_str("its key needs the Hub, which cannot be asked now:\n");
                    for (param, uri) in uris {
                        out.push_str(&format!("  - `{uri}` (param `{param}`)\n"));
                    }
                }
                Reason::Damaged(problems) => {
                    out.push_str("its stored result is damaged and is recomputed\n");
                    for p in problems {
                        out.push_str(&format!("  - {p}\n"));
                    }
                }
                Reason::Changed(changes) if changes.is_empty() => {
                    out.push_str("its earlier result was removed from the cache (`cache gc`)\n");
                }
                Reason::Changed(changes) => {
                    out.push_str("since its last run,\n");
                    for c in changes {
                        out.push_str(&format!("  - {c}\n"));
                    }
                }
                Reason::Upstream { upstream, own } => {
                    out.push_str("inputs it reads are recomputed first:\n");
                    for u in upstream {
                        let why = plan
                            .pipeline
                            .find(u)
                            .and_then(|j| match &plan.statuses[j] {
                                Status::Run(r) => Some(r.to_string()),
                                Status::Remote(_) => Some("pulled from the remote".into()),
                                Status::Cached(_) => None,
                            })
                            .unwrap_or_else(|| "forced".into());
                        out.push_str(&format!("  - input `{u}`: {why}\n"));
                    }
                    if own.is_empty() {
                        out.push_str("  its own parameters are unchanged: if those inputs come out byte-identical, its stored result is reused\n");
                    } else {
                        for c in own {
                            out.push_str(&format!("  - {c}\n"));
                        }
                    }
                }
            }
            if let Some(k) = &plan.keys[i] {
                out.push_str(&format!("  new key  {k}\n"));
            }
            if let Some(prev) = &plan.previous[i] {
                out.push_str(&format!(
                    "  last run {} (key {}, {:.2}s)\n",
                    fmt_time(prev.finished_at),
                    prev.key,
                    prev.seconds
                ));
            }
            if let Some(f) = &plan.failures[i] {
                out.push_str(&format!(
                    "  last failure {}: {}\n",
                    fmt_time(f.finished_at),
                    f.message
                ));
                if let Some(log) = &f.log {
                    out.push_str(&format!(
                        "  log      {}\n",
                        crate::error::display_path(log).display()
                    ));
                }
            }
        }
    }
}
