//! Small readers over `kdl` nodes that turn every shape mistake into a
//! diagnostic at the right span.

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::error::{Diag, Diags, SourceFile};

/// Parses a KDL document (v2, or v1 as a fallback); syntax errors point at their span.
pub fn parse(src: &SourceFile) -> Result<KdlDocument, Diags> {
    super::limits::check(src)?;
    parse_on_a_large_stack(src)?.map_err(|err| {
        let mut diags = Diags::default();
        for d in &err.diagnostics {
            let msg = d.message.clone().unwrap_or_else(|| "invalid KDL".into());
            let mut diag = Diag::input("E-SYNTAX", format!("KDL syntax error: {}", msg.trim_end_matches('.')))
                .at(src, d.span, d.label.clone().unwrap_or_else(|| "here".into()));
            diag.help = Some(d.help.clone().unwrap_or_else(|| {
                "see https://kdl.dev for the syntax: `name arg key=value { children }`; strings in quotes, booleans #true/#false".into()
            }));
            diags.push(diag);
        }
        if diags.is_empty() {
            diags.push(Diag::input("E-SYNTAX", "KDL syntax error").at(src, SourceSpan::from(0..0), "in this file"));
        }
        diags
    })
}

/// What the parser thread is sent: a text, and where to send its document.
type ParseJob = (
    std::sync::Arc<String>,
    std::sync::mpsc::Sender<Result<KdlDocument, kdl::KdlError>>,
);

/// The parser recurses; the limits keep nesting shallow, and one thread with
/// a large stack (reserved, not used), started once per process, keeps a
/// broken file that the limits read otherwise than the parser from aborting
/// the process. One thread for every file: a run parses a dozen.
fn parse_on_a_large_stack(src: &SourceFile) -> Result<Result<KdlDocument, kdl::KdlError>, Diag> {
    static PARSER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<ParseJob>>> =
        std::sync::OnceLock::new();
    let failed =
        |what: &str| Diag::internal(format!("cannot parse `{}`: {what}", src.path.display()));
    let parser = PARSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<ParseJob>();
        // A thread that cannot start leaves the channel closed: each parse then says so.
        let _ = std::thread::Builder::new()
            .name("kdl".into())
            .stack_size(256 << 20)
            .spawn(move || {
                for (text, reply) in rx {
                    let _ = reply.send(KdlDocument::parse(&text));
                }
            });
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = std::sync::mpsc::channel();
    parser
        .lock()
        .map_err(|_| failed("the KDL parser failed"))?
        .send((src.text.clone(), reply))
        .map_err(|_| failed("the KDL parser thread could not start"))?;
    answer.recv().map_err(|_| failed("the KDL parser failed"))
}

pub fn name(node: &KdlNode) -> &str {
    node.name().value()
}

pub fn name_span(node: &KdlNode) -> SourceSpan {
    node.name().span()
}

/// Positional arguments.
pub fn args(node: &KdlNode) -> Vec<&KdlEntry> {
    node.entries()
        .iter()
        .filter(|e| e.name().is_none())
        .collect()
}

/// Named properties, in source order.
pub fn props(node: &KdlNode) -> Vec<(&str, &KdlEntry)> {
    node.entries()
        .iter()
        .filter_map(|e| e.name().map(|n| (n.value(), e)))
        .collect()
}

pub fn children(node: &KdlNode) -> &[KdlNode] {
    node.children().map(|d| d.nodes()).unwrap_or(&[])
}

/// The node's single string argument (e.g. `stage "a"`).
pub fn string_arg(
    src: &SourceFile,
    node: &KdlNode,
    what: &str,
) -> Result<(String, SourceSpan), Diag> {
    match args(node).as_slice() {
        [one] => match one.value() {
            KdlValue::String(s) => Ok((s.clone(), one.span())),
            other => Err(Diag::input(
                "E-SHAPE",
                format!("`{}` takes {what} as a string", name(node)),
            )
            .at(
                src,
                one.span(),
                format!("found {}", crate::dsl::value::describe_kdl(other)),
            )
            .with_help(format!("write `{} \"...\"`", name(node)))),
        },
        [] => Err(
            Diag::input("E-SHAPE", format!("`{}` needs {what}", name(node)))
                .at(src, name_span(node), "missing argument")
                .with_help(format!("write `{} \"...\"`", name(node))),
        ),
        [_, extra, ..] => Err(Diag::input(
            "E-SHAPE",
            format!("`{}` takes one argument ({what})", name(node)),
        )
        .at(src, extra.span(), "unexpected extra argument")),
    }
}

/// A string property `key="..."`.
pub fn string_prop(
    src: &SourceFile,
    node: &KdlNode,
    key: &str,
) -> Result<Option<(String, SourceSpan)>, Diag> {
    for (k, e) in props(node) {
        if k == key {
            return match e.value() {
                KdlValue::String(s) => Ok(Some((s.clone(), e.span()))),
                KdlValue::Integer(i) => Ok(Some((i.to_string(), e.span()))),
                other => Err(
                    Diag::input("E-SHAPE", format!("property `{key}` must be a string")).at(
                        src,
                        e.span(),
                        format!("found {}", crate::dsl::value::describe_kdl(other)),
                    ),
                ),
            };
        }
    }
    Ok(None)
}

/// An integer argument or property value that must be non-negative.
pub fn usize_value(src: &SourceFile, entry: &KdlEntry, what: &str) -> Result<usize, Diag> {
    match entry.value() {
        KdlValue::Integer(i) if *i >= 0 => usize::try_from(*i).map_err(|_| {
            Diag::input("E-SHAPE", format!("{what} is too large")).at(src, entry.span(), "here")
        }),
        other => Err(
            Diag::input("E-SHAPE", format!("{what} must be a non-negative integer")).at(
                src,
                entry.span(),
                format!("found {}", crate::dsl::value::describe_kdl(other)),
            ),
        ),
    }
}

/// Error for a node that may not have children.
pub fn no_children(src: &SourceFile, node: &KdlNode) -> Result<(), Diag> {
    if let Some(doc) = node.children()
        && !doc.nodes().is_empty()
    {
        return Err(Diag::input(
            "E-SHAPE",
            format!("`{}` takes no children block", name(node)),
        )
        .at(src, doc.span(), "unexpected block")
        .with_help("remove the `{ ... }` block"));
    }
    Ok(())
}

/// Error for an unknown node name, with a did-you-mean.
pub fn unknown_node(src: &SourceFile, node: &KdlNode, context: &str, known: &[&str]) -> Diag {
    let mut d = Diag::input(
        "E-UNKNOWN-NODE",
        format!("unknown `{}` in {context}", name(node)),
    )
    .at(src, name_span(node), "not understood here");
    d.help = Some(
        match crate::error::did_you_mean(name(node), known.iter().copied()) {
            Some(s) => format!(
                "did you mean `{s}`? ({context} accepts: {})",
                known.join(", ")
            ),
            None => format!("{context} accepts: {}", known.join(", ")),
        },
    );
    d
}

/// Refuses properties a node does not take (a typo must not be ignored).
pub fn only_props(src: &SourceFile, node: &KdlNode, known: &[&str]) -> Result<(), Diag> {
    for (prop, entry) in props(node) {
        if !known.contains(&prop) {
            let mut d = Diag::input(
                "E-SHAPE",
                format!("`{}` has no property `{prop}`", name(node)),
            )
            .at(src, entry.span(), "not understood here");
            d.help = Some(
                match crate::error::did_you_mean(prop, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("`{}` takes: {}", name(node), known.join(", ")),
                },
            );
            return Err(d);
        }
    }
    Ok(())
}
