//! Stage-kind manifests (`plugins/**/<name>.kdl`) and the registry of kinds.
//!
//! ```kdl
//! plugin "shout" version="1" {
//!     doc "Upper-cases the text of its inputs"
//!     run "python3" "shout.py"          // or: builtin "dataset"
//!     param "times" type="int" default=1 doc="repeat count" min=0
//!     param "mode" type="string" default="a" { choices "a" "b" }
//!     inputs min=0 max=2                // or roles, one line each:
//!     // input "policy" format="model" doc="..."          exactly one
//!     // input "datasets" format="dataset" many=#true     one or more (optional=#true: zero too)
//!     produces "dataset"                // the format of its result (default: files)
//!     resource "gpu"                    // stages holding the same resource never overlap
//!     requests gpus=1 cpus=8 mem="32G" time="4h"  // what a cluster job asks for (not identity)
//!     depends "helpers.py"              // extra files whose content is part of the kind's identity
//!     output "text.txt" doc="the shouted text"
//! }
//! ```
//! Relative paths in `run` and `depends` are resolved from the manifest's folder;
//! a program without a slash that is not in that folder is looked up in `PATH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdl::{KdlNode, KdlValue};
use miette::SourceSpan;
use serde::Serialize;

use super::kdl_util as k;
use super::value::{ParamType, Value, value_from_args};
use crate::error::{Diag, Diags, SourceFile, did_you_mean};
use crate::stages::formats::Format;

/// How a kind runs.
#[derive(Debug, Clone)]
pub enum Exec {
    /// An external program, started with the stage description in `EFRLHF_STAGE`.
    Program {
        program: PathBuf,
        /// Arguments with local files resolved to absolute paths.
        args: Vec<String>,
        /// The command as written (what identifies the kind; no checkout paths).
        written: Vec<String>,
    },
    /// Rust code inside efrlhf (see `stages`).
    Builtin { name: String },
}

/// A declared parameter.
#[derive(Debug, Clone, Serialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: Option<Value>,
    #[serde(skip)]
    pub doc: String,
    pub choices: Vec<Value>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(skip)]
    pub span: SourceSpan,
}

impl ParamSpec {
    /// Checks choices and bounds; returns a message when the value is out of them.
    pub fn check_range(&self, v: &Value) -> Option<String> {
        let items: Vec<&Value> = match v {
            Value::List(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if !self.choices.is_empty() && !self.choices.contains(item) {
                let list: Vec<String> = self.choices.iter().map(|c| c.to_string()).collect();
                return Some(format!("`{item}` is not one of: {}", list.join(", ")));
            }
            if let Some(x) = item.as_f64() {
                if let Some(min) = self.min
                    && x < min
                {
                    return Some(format!("{item} is below the minimum {min}"));
                }
                if let Some(max) = self.max
                    && x > max
                {
                    return Some(format!("{item} is above the maximum {max}"));
                }
            }
        }
        None
    }
}

/// A named input of a kind, and the artifact format it accepts.
#[derive(Debug, Clone, Serialize)]
pub struct InputRole {
    pub name: String,
    #[serde(serialize_with = "format_name")]
    pub format: Format,
    /// Fewest inputs in this role (0 or 1).
    pub min: usize,
    /// Most inputs in this role (`None`: any number).
    pub max: Option<usize>,
    #[serde(skip)]
    pub doc: String,
    #[serde(skip)]
    pub span: SourceSpan,
}

fn format_name<S: serde::Serializer>(f: &Format, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.name())
}

impl InputRole {
    /// Whether the role takes several inputs.
    pub fn is_many(&self) -> bool {
        self.max != Some(1)
    }
    /// `exactly one`, `at most one`, `one or more`, `any number`.
    pub fn arity(&self) -> &'static str {
        match (self.min, self.max) {
            (1, Some(1)) => "exactly one",
            (0, Some(1)) => "at most one",
            (1, None) => "one or more",
            _ => "any number",
        }
    }
}

/// Documentation of an output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputDoc {
    pub name: String,
    pub doc: String,
}

/// A stage kind.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub doc: String,
    pub exec: Exec,
    pub params: Vec<ParamSpec>,
    pub min_inputs: usize,
    pub max_inputs: Option<usize>,
    /// Named inputs; empty for kinds that take positional inputs only.
    pub roles: Vec<InputRole>,
    /// The format of the kind's result.
    pub produces: Format,
    pub resources: Vec<String>,
    /// Default machine requests of its stages (`requests gpus=1 ...`; not part of its identity).
    pub requests: super::Requests,
    pub outputs: Vec<OutputDoc>,
    /// Local files whose content identifies the kind (program, scripts, `depends`).
    pub files: Vec<PathBuf>,
    pub source: SourceFile,
    pub span: SourceSpan,
    /// The folder holding the manifest (`None` for built-ins embedded in the binary).
    pub dir: Option<PathBuf>,
}

/// The part of a manifest that identifies a kind's behaviour (hashed into keys):
/// everything but documentation and absolute paths.
#[derive(Serialize)]
struct Identity<'a> {
    name: &'a str,
    version: &'a str,
    exec: Vec<String>,
    params: &'a [ParamSpec],
    min_inputs: usize,
    max_inputs: Option<usize>,
    // Absent when unused, so kinds without roles keep their identity.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    roles: &'a [InputRole],
    #[serde(skip_serializing_if = "is_files")]
    produces: Option<&'static str>,
    resources: &'a [String],
}

fn is_files(f: &Option<&'static str>) -> bool {
    f.is_none()
}

impl Manifest {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn role(&self, name: &str) -> Option<&InputRole> {
        self.roles.iter().find(|r| r.name == name)
    }
    /// Whether results depend on the compute backend (declares `resource "gpu"`).
    pub fn uses_backend(&self) -> bool {
        self.resources.iter().any(|r| r == "gpu")
    }
    /// Canonical bytes of the behaviour-relevant part of the manifest.
    pub fn identity_bytes(&self) -> Vec<u8> {
        let exec = match &self.exec {
            Exec::Program { written, .. } => written.clone(),
            Exec::Builtin { name } => vec![format!("builtin:{name}")],
        };
        let id = Identity {
            name: &self.name,
            version: &self.version,
            exec,
            params: &self.params,
            min_inputs: self.min_inputs,
            max_inputs: self.max_inputs,
            roles: &self.roles,
            produces: (self.produces != Format::Files).then(|| self.produces.name()),
            resources: &self.resources,
        };
        serde_json::to_vec(&id).unwrap_or_default()
    }
}

const MANIFEST_NODES: &[&str] = &[
    "doc", "run", "builtin", "param", "inputs", "input", "produces", "resource", "requests",
    "depends", "output",
];

/// Parses one manifest file. `dir` is `None` for built-ins.
pub fn parse_manifest(src: &SourceFile, dir: Option<&Path>) -> Result<Manifest, Diags> {
    let doc = k::parse(src)?;
    let mut diags = Diags::default();
    let node = plugin_node(src, &doc, &mut diags)?;
    let (name, span) = match k::string_arg(src, node, "the kind's name") {
        Ok(x) => x,
        Err(e) => {
            diags.push(e);
            return Err(diags);
        }
    };
    let version = plugin_version(src, node, &mut diags);
    let mut m = Manifest {
        name,
        version,
        doc: String::new(),
        exec: Exec::Builtin {
            name: String::new(),
        },
        params: Vec::new(),
        min_inputs: 0,
        max_inputs: None,
        roles: Vec::new(),
        produces: Format::Files,
        resources: Vec::new(),
        requests: super::Requests::default(),
        outputs: Vec::new(),
        files: Vec::new(),
        source: src.clone(),
        span,
        dir: dir.map(Path::to_path_buf),
    };
    let mut seen = Seen::default();
    for child in k::children(node) {
        if let Err(e) = parse_child(src, child, dir, &mut m, &mut seen) {
            diags.push(e);
        }
    }
    finish(src, &mut m, &seen, &mut diags);
    diags.into_result(m)
}

/// The file's one `plugin` node; anything else is reported.
fn plugin_node<'d>(
    src: &SourceFile,
    doc: &'d kdl::KdlDocument,
    diags: &mut Diags,
) -> Result<&'d KdlNode, Diags> {
    let plugins: Vec<&KdlNode> = doc
        .nodes()
        .iter()
        .filter(|n| k::name(n) == "plugin")
        .collect();
    for n in doc.nodes() {
        if k::name(n) != "plugin" {
            diags.push(k::unknown_node(src, n, "a manifest file", &["plugin"]));
        }
    }
    match plugins.as_slice() {
        [one] => Ok(*one),
        [] => {
            diags.push(
                Diag::input(
                    "E-MANIFEST",
                    "a manifest must contain one `plugin \"name\" { ... }` node",
                )
                .at(src, SourceSpan::from(0..0), "no plugin node in this file"),
            );
            Err(std::mem::take(diags))
        }
        [_, second, ..] => {
            diags.push(
                Diag::input("E-MANIFEST", "a manifest file declares exactly one plugin")
                    .at(src, k::name_span(second), "second plugin")
                    .with_help("put each plugin in its own file"),
            );
            Err(std::mem::take(diags))
        }
    }
}

/// `version="..."` (default `0`); other properties are reported.
fn plugin_version(src: &SourceFile, node: &KdlNode, diags: &mut Diags) -> String {
    let version = match k::string_prop(src, node, "version") {
        Ok(v) => v.map(|(s, _)| s).unwrap_or_else(|| "0".into()),
        Err(e) => {
            diags.push(e);
            "0".into()
        }
    };
    for (key, e) in k::props(node) {
        if key != "version" {
            diags.push(
                Diag::input(
                    "E-MANIFEST",
                    format!("unknown property `{key}` on `plugin`"),
                )
                .at(src, e.span(), "not understood")
                .with_help("`plugin` takes `version=\"...\"`"),
            );
        }
    }
    version
}

/// Where the once-only children of a plugin were seen.
#[derive(Default)]
struct Seen {
    exec: Option<SourceSpan>,
    inputs: Option<SourceSpan>,
}

/// One child of the `plugin` node, into `m`.
fn parse_child(
    src: &SourceFile,
    child: &KdlNode,
    dir: Option<&Path>,
    m: &mut Manifest,
    seen: &mut Seen,
) -> Result<(), Diag> {
    match k::name(child) {
        "doc" => k::string_arg(src, child, "the documentation").map(|(s, _)| m.doc = s),
        "run" => set_once(src, child, &mut seen.exec).and_then(|_| {
            parse_run(src, child, dir).map(|(e, f)| {
                m.exec = e;
                m.files.extend(f);
            })
        }),
        "builtin" => set_once(src, child, &mut seen.exec)
            .and_then(|_| k::string_arg(src, child, "the built-in's name"))
            .map(|(s, _)| m.exec = Exec::Builtin { name: s }),
        "param" => parse_param(src, child).and_then(|p| add_param(src, m, p)),
        "inputs" => parse_inputs(src, child, m).map(|_| seen.inputs = Some(k::name_span(child))),
        "input" => parse_role(src, child).and_then(|r| {
            if let Some(prev) = m.role(&r.name) {
                return Err(Diag::input(
                    "E-MANIFEST",
                    format!("input role `{}` is declared twice", r.name),
                )
                .at(src, r.span, "second declaration")
                .also(prev.span, "first declaration"));
            }
            m.roles.push(r);
            Ok(())
        }),
        "produces" => k::string_arg(src, child, "a format name").and_then(|(s, span)| {
            m.produces = parse_format(src, &s, span)?;
            Ok(())
        }),
        "resource" => {
            k::string_arg(src, child, "a resource name").map(|(s, _)| m.resources.push(s))
        }
        "requests" => super::parse_requests(src, child).map(|r| m.requests = r),
        "depends" => parse_depends(src, child, dir).map(|f| m.files.extend(f)),
        "output" => k::string_arg(src, child, "the output file's name").and_then(|(s, _)| {
            let doc = k::string_prop(src, child, "doc")?
                .map(|(d, _)| d)
                .unwrap_or_default();
            m.outputs.push(OutputDoc { name: s, doc });
            Ok(())
        }),
        _ => Err(k::unknown_node(src, child, "a plugin", MANIFEST_NODES)),
    }
}

fn add_param(src: &SourceFile, m: &mut Manifest, p: ParamSpec) -> Result<(), Diag> {
    if let Some(prev) = m.param(&p.name) {
        Err(Diag::input(
            "E-MANIFEST",
            format!("parameter `{}` is declared twice", p.name),
        )
        .at(src, p.span, "second declaration")
        .also(prev.span, "first declaration"))
    } else if crate::dsl::RESERVED_STAGE_CHILDREN.contains(&p.name.as_str()) {
        Err(Diag::input(
            "E-MANIFEST",
            format!("`{}` is reserved and cannot be a parameter", p.name),
        )
        .at(src, p.span, "reserved name")
        .with_help("every stage already has `input` and `seed`; choose another name"))
    } else {
        m.params.push(p);
        Ok(())
    }
}

/// Checks across children: how the kind runs, and its input counts.
fn finish(src: &SourceFile, m: &mut Manifest, seen: &Seen, diags: &mut Diags) {
    if let (Some(span), Some(first)) = (seen.inputs, m.roles.first()) {
        diags.push(
            Diag::input(
                "E-MANIFEST",
                "a plugin declares either `inputs min=.. max=..` or named `input` roles, not both",
            )
            .at(src, span, "counts")
            .also(first.span, "a role")
            .with_help("the roles' counts say how many inputs the kind takes"),
        );
    }
    if !m.roles.is_empty() {
        m.min_inputs = m.roles.iter().map(|r| r.min).sum();
        m.max_inputs = m.roles.iter().map(|r| r.max).sum::<Option<usize>>();
    }
    if seen.exec.is_none() {
        diags.push(
            Diag::input(
                "E-MANIFEST",
                format!(
                    "plugin `{}` says neither how to run nor which built-in it is",
                    m.name
                ),
            )
            .at(src, m.span, "this plugin")
            .with_help(
                "add `run \"program\" \"arg\"...` (an external program) or `builtin \"name\"`",
            ),
        );
    }
}

fn set_once(src: &SourceFile, node: &KdlNode, seen: &mut Option<SourceSpan>) -> Result<(), Diag> {
    if let Some(prev) = seen {
        return Err(
            Diag::input("E-MANIFEST", "a plugin has one `run` or `builtin`")
                .at(src, k::name_span(node), "second one")
                .also(*prev, "first one"),
        );
    }
    *seen = Some(k::name_span(node));
    Ok(())
}

/// File extensions that mark an argument as a script that must exist.
const SCRIPT_EXTENSIONS: &[&str] = &[
    "py", "sh", "bash", "r", "jl", "js", "mjs", "pl", "rb", "lua",
];

fn looks_like_file(arg: &str) -> bool {
    if arg.starts_with('-') || arg.contains('=') {
        return false;
    }
    if arg.contains('/') {
        return true;
    }
    Path::new(arg)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SCRIPT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn parse_run(
    src: &SourceFile,
    node: &KdlNode,
    dir: Option<&Path>,
) -> Result<(Exec, Vec<PathBuf>), Diag> {
    k::no_children(src, node)?;
    let entries = k::args(node);
    let mut written = Vec::new();
    for e in &entries {
        match e.value() {
            KdlValue::String(s) => written.push(s.clone()),
            KdlValue::Integer(i) => written.push(i.to_string()),
            KdlValue::Float(f) => written.push(f.to_string()),
            other => {
                return Err(Diag::input(
                    "E-MANIFEST",
                    "`run` takes the program and its arguments as strings",
                )
                .at(
                    src,
                    e.span(),
                    format!("found {}", crate::dsl::value::describe_kdl(other)),
                ));
            }
        }
    }
    let Some(first) = written.first() else {
        return Err(Diag::input("E-MANIFEST", "`run` needs a program")
            .at(src, k::name_span(node), "missing program")
            .with_help("write `run \"python3\" \"script.py\"`"));
    };
    let dir = dir.unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let program = resolve_program(first, dir).ok_or_else(|| {
        Diag::env("E-PROGRAM", format!("plugin program `{first}` not found"))
            .at(
                src,
                entries[0].span(),
                "not in the manifest's folder nor in PATH",
            )
            .with_help(format!(
                "install `{first}`, or give a path relative to the manifest's folder `{}`",
                crate::error::display_path(dir).display()
            ))
    })?;
    if program.starts_with(dir) || first.contains('/') {
        files.push(program.clone());
    }
    let mut args = Vec::new();
    for (i, a) in written.iter().enumerate().skip(1) {
        let candidate = dir.join(a);
        if !a.starts_with('-') && candidate.exists() {
            files.push(candidate.clone());
            args.push(candidate.display().to_string());
        } else if looks_like_file(a) {
            return Err(
                Diag::env("E-PROGRAM", format!("plugin script `{a}` not found"))
                    .at(
                        src,
                        entries[i].span(),
                        format!(
                            "no such file in `{}`",
                            crate::error::display_path(dir).display()
                        ),
                    )
                    .with_help(
                        "paths in `run` are relative to the manifest's folder; check the file name",
                    ),
            );
        } else {
            args.push(a.clone());
        }
    }
    Ok((
        Exec::Program {
            program,
            args,
            written,
        },
        files,
    ))
}

fn resolve_program(name: &str, dir: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        let p = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            dir.join(name)
        };
        return p.is_file().then_some(p);
    }
    let local = dir.join(name);
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn parse_depends(
    src: &SourceFile,
    node: &KdlNode,
    dir: Option<&Path>,
) -> Result<Vec<PathBuf>, Diag> {
    let dir = dir.unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for e in k::args(node) {
        let KdlValue::String(s) = e.value() else {
            return Err(Diag::input("E-MANIFEST", "`depends` takes file names").at(
                src,
                e.span(),
                "not a string",
            ));
        };
        let p = dir.join(s);
        if !std::fs::metadata(&p).is_ok_and(|m| m.is_file() || m.is_dir()) {
            // A mistake in the manifest (exit 2), unlike a program missing from the machine.
            return Err(
                Diag::input("E-MANIFEST", format!("declared dependency `{s}` not found"))
                    .at(src, e.span(), "no such file or folder")
                    .with_help("paths in `depends` are relative to the manifest's folder and name a file or a folder"),
            );
        }
        out.push(p);
    }
    Ok(out)
}

fn parse_inputs(src: &SourceFile, node: &KdlNode, m: &mut Manifest) -> Result<(), Diag> {
    for (key, e) in k::props(node) {
        match key {
            "min" => m.min_inputs = k::usize_value(src, e, "`min`")?,
            "max" => m.max_inputs = Some(k::usize_value(src, e, "`max`")?),
            _ => {
                return Err(Diag::input(
                    "E-MANIFEST",
                    format!("unknown property `{key}` on `inputs`"),
                )
                .at(src, e.span(), "not understood")
                .with_help("`inputs` takes `min=N` and `max=N`"));
            }
        }
    }
    if let Some(max) = m.max_inputs
        && max < m.min_inputs
    {
        return Err(Diag::input("E-MANIFEST", "`inputs` has max below min").at(
            src,
            k::name_span(node),
            "here",
        ));
    }
    Ok(())
}

fn parse_format(src: &SourceFile, name: &str, span: SourceSpan) -> Result<Format, Diag> {
    Format::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        Diag::input("E-MANIFEST", format!("unknown format `{name}`"))
            .at(src, span, "not a format")
            .with_help(format!("formats: {}", names.join(", ")))
    })
}

/// `input "name" format="model" [many=#true] [optional=#true] [doc="..."]`.
fn parse_role(src: &SourceFile, node: &KdlNode) -> Result<InputRole, Diag> {
    k::no_children(src, node)?;
    let (name, span) = k::string_arg(src, node, "the role's name")?;
    let mut role = InputRole {
        name,
        format: Format::Files,
        min: 1,
        max: Some(1),
        doc: String::new(),
        span,
    };
    let (mut many, mut optional, mut format_seen) = (false, false, false);
    for (key, e) in k::props(node) {
        let flag = || match e.value() {
            KdlValue::Bool(b) => Ok(*b),
            _ => Err(
                Diag::input("E-MANIFEST", format!("`{key}` is #true or #false")).at(
                    src,
                    e.span(),
                    "here",
                ),
            ),
        };
        match key {
            "format" => {
                let KdlValue::String(f) = e.value() else {
                    return Err(Diag::input("E-MANIFEST", "`format` must be a string").at(
                        src,
                        e.span(),
                        "here",
                    ));
                };
                role.format = parse_format(src, f, e.span())?;
                format_seen = true;
            }
            "many" => many = flag()?,
            "optional" => optional = flag()?,
            "doc" => {
                if let KdlValue::String(d) = e.value() {
                    role.doc = d.clone();
                }
            }
            _ => {
                return Err(Diag::input(
                    "E-MANIFEST",
                    format!("unknown property `{key}` on `input`"),
                )
                .at(src, e.span(), "not understood")
                .with_help("`input` takes format=, many=, optional=, doc="));
            }
        }
    }
    if !format_seen {
        return Err(Diag::input(
            "E-MANIFEST",
            format!("input role `{}` has no format", role.name),
        )
        .at(src, span, "add format=\"...\"")
        .with_help("formats: dataset, tokenizer, model, reward-model, evaluation, files"));
    }
    role.min = usize::from(!optional);
    role.max = (!many).then_some(1);
    Ok(role)
}

fn parse_param(src: &SourceFile, node: &KdlNode) -> Result<ParamSpec, Diag> {
    let (name, name_span) = k::string_arg(src, node, "the parameter's name")?;
    let mut spec = ParamSpec {
        name,
        ty: ParamType::String,
        default: None,
        doc: String::new(),
        choices: Vec::new(),
        min: None,
        max: None,
        span: name_span,
    };
    let mut default_entry = None;
    let mut ty_seen = false;
    for (key, e) in k::props(node) {
        match key {
            "type" => {
                spec.ty = param_type(src, e)?;
                ty_seen = true;
            }
            "default" => default_entry = Some(e),
            "doc" => {
                if let KdlValue::String(s) = e.value() {
                    spec.doc = s.clone();
                }
            }
            "min" => spec.min = Some(bound(src, key, e)?),
            "max" => spec.max = Some(bound(src, key, e)?),
            _ => {
                return Err(Diag::input(
                    "E-MANIFEST",
                    format!("unknown property `{key}` on `param`"),
                )
                .at(src, e.span(), "not understood")
                .with_help(
                    "`param` takes type=, default=, doc=, min=, max= (and a `choices` child)",
                ));
            }
        }
    }
    if !ty_seen {
        return Err(Diag::input(
            "E-MANIFEST",
            format!("parameter `{}` has no type", spec.name),
        )
        .at(src, name_span, "add type=\"...\"")
        .with_help("types: int, float, bool, string, path, list<...>"));
    }
    if let Some(e) = default_entry {
        spec.default = Some(default_of(src, &spec, &[e.value()], e.span())?);
    }
    for child in k::children(node) {
        param_child(src, child, &mut spec)?;
    }
    if let Some(d) = &spec.default
        && let Some(msg) = spec.check_range(d)
    {
        return Err(Diag::input(
            "E-MANIFEST",
            format!("default of `{}` is invalid: {msg}", spec.name),
        )
        .at(src, name_span, "here"));
    }
    Ok(spec)
}

fn param_type(src: &SourceFile, e: &kdl::KdlEntry) -> Result<ParamType, Diag> {
    let KdlValue::String(t) = e.value() else {
        return Err(Diag::input("E-MANIFEST", "`type` must be a string").at(src, e.span(), "here"));
    };
    ParamType::parse(t).ok_or_else(|| {
        Diag::input("E-MANIFEST", format!("unknown parameter type `{t}`"))
            .at(src, e.span(), "unknown type")
            .with_help("types: int, float, bool, string, path, list<int|float|bool|string|path>")
    })
}

/// `min=` or `max=`: a number.
fn bound(src: &SourceFile, key: &str, e: &kdl::KdlEntry) -> Result<f64, Diag> {
    match e.value() {
        KdlValue::Integer(i) => Ok(*i as f64),
        KdlValue::Float(f) => Ok(*f),
        _ => Err(
            Diag::input("E-MANIFEST", format!("`{key}` must be a number")).at(
                src,
                e.span(),
                "here",
            ),
        ),
    }
}

fn default_of(
    src: &SourceFile,
    spec: &ParamSpec,
    values: &[&KdlValue],
    span: SourceSpan,
) -> Result<Value, Diag> {
    value_from_args(values, &spec.ty).map_err(|(_, msg)| {
        Diag::input(
            "E-MANIFEST",
            format!("bad default for `{}`: {msg}", spec.name),
        )
        .at(src, span, "here")
    })
}

/// A `choices` or `default` child of a `param`.
fn param_child(src: &SourceFile, child: &KdlNode, spec: &mut ParamSpec) -> Result<(), Diag> {
    match k::name(child) {
        "choices" => {
            let elem = match &spec.ty {
                ParamType::List(e) => (**e).clone(),
                t => t.clone(),
            };
            for e in k::args(child) {
                let v = crate::dsl::value::scalar_from_kdl(e.value(), &elem).map_err(|msg| {
                    Diag::input("E-MANIFEST", format!("bad choice: {msg}")).at(
                        src,
                        e.span(),
                        "here",
                    )
                })?;
                spec.choices.push(v);
            }
            Ok(())
        }
        "default" => {
            let entries = k::args(child);
            let values: Vec<&KdlValue> = entries.iter().map(|e| e.value()).collect();
            spec.default = Some(default_of(src, spec, &values, k::name_span(child))?);
            Ok(())
        }
        _ => Err(k::unknown_node(
            src,
            child,
            "a param",
            &["choices", "default"],
        )),
    }
}

/// All known stage kinds, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<Manifest>>,
}

impl Registry {
    /// Loads built-in manifests (embedded text) and every `*.kdl` file in `dirs`.
    /// Reports every broken manifest, not just the first.
    pub fn load(builtins: &[(&str, &str)], dirs: &[PathBuf]) -> Result<Registry, Diags> {
        let mut reg = Registry::default();
        let mut diags = Diags::default();
        for (path, text) in builtins {
            let src = SourceFile::new(Path::new(path), (*text).to_string());
            match parse_manifest(&src, None) {
                Ok(m) => reg.insert(m, &mut diags),
                Err(d) => diags.0.extend(d.0),
            }
        }
        for dir in dirs {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "kdl") && p.is_file())
                    .collect(),
                Err(e) => {
                    diags.push(
                        Diag::env(
                            "E-PLUGIN-DIR",
                            format!(
                                "cannot read plugin folder `{}`: {e}",
                                crate::error::display_path(dir).display()
                            ),
                        )
                        .with_help("plugin folders are relative to the experiment file"),
                    );
                    continue;
                }
            };
            files.sort();
            for f in files {
                match SourceFile::read(&f)
                    .map_err(Diags::from)
                    .and_then(|src| parse_manifest(&src, Some(dir)))
                {
                    Ok(m) => reg.insert(m, &mut diags),
                    Err(d) => diags.0.extend(d.0),
                }
            }
        }
        diags.into_result(reg)
    }

    fn insert(&mut self, m: Manifest, diags: &mut Diags) {
        if let Some(prev) = self.kinds.get(&m.name) {
            diags.push(
                Diag::input(
                    "E-DUP-KIND",
                    format!("stage kind `{}` is declared twice", m.name),
                )
                .at(&m.source, m.span, "this declaration")
                .with_help(format!(
                    "the other one is in `{}`; rename one of them",
                    prev.source.path.display()
                )),
            );
            return;
        }
        self.kinds.insert(m.name.clone(), Arc::new(m));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Manifest>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Manifest>> {
        self.kinds.values()
    }

    pub fn suggest(&self, name: &str) -> Option<String> {
        did_you_mean(name, self.names())
    }
}
