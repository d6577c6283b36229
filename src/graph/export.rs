//! DOT and Mermaid renderings of the expanded graph.

use std::fmt::Write;

use super::Pipeline;

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT, nodes labelled `id` and `kind`.
pub fn to_dot(p: &Pipeline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", quote(&p.experiment.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, style=rounded];");
    for n in &p.nodes {
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\"];",
            quote(&n.id),
            quote(&n.id),
            quote(&n.kind.name)
        );
    }
    for n in &p.nodes {
        for &i in &n.inputs {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                quote(&p.nodes[i].id),
                quote(&n.id)
            );
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart (renders in GitHub Markdown).
pub fn to_mermaid(p: &Pipeline) -> String {
    let mut out = String::from("flowchart LR\n");
    let esc = |s: &str| s.replace('"', "#quot;");
    for (i, n) in p.nodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  n{i}[\"{}<br/><i>{}</i>\"]",
            esc(&n.id),
            esc(&n.kind.name)
        );
    }
    for (i, n) in p.nodes.iter().enumerate() {
        for &u in &n.inputs {
            let _ = writeln!(out, "  n{u} --> n{i}");
        }
    }
    out
}
