//! Stage-kind manifests (`plugins/**/<name>.kdl`) and the registry of kinds.
//!
//! ```kdl
//! plugin "shout" version="1" {
//!     doc "Upper-cases the text of its inputs"
//!     run "python3" "shout.py"          // or: builtin "dataset"
//!     param "times" type="int" default=1 doc="repeat count" min=0
//!     param "mode" type="string" default="a" { choices "a" "b" }
//!     inputs min=0 max=2
//!     resource "gpu"                    // stages holding the same resource never overlap
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
    pub resources: Vec<String>,
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
    resources: &'a [String],
}

impl Manifest {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn is_builtin(&self) -> bool {
        matches!(self.exec, Exec::Builtin { .. })
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
            resources: &self.resources,
        };
        serde_json::to_vec(&id).unwrap_or_default()
    }
}

const MANIFEST_NODES: &[&str] = &[
    "doc", "run", "builtin", "param", "inputs", "resource", "depends", "output",
];

/// Parses one manifest file. `dir` is `None` for built-ins.
pub fn parse_manifest(src: &SourceFile, dir: Option<&Path>) -> Result<Manifest, Diags> {
    let doc = k::parse(src)?;
    let mut diags = Diags::default();
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
    let node = match plugins.as_slice() {
        [one] => *one,
        [] => {
            diags.push(
                Diag::input(
                    "E-MANIFEST",
                    "a manifest must contain one `plugin \"name\" { ... }` node",
                )
                .at(src, SourceSpan::from(0..0), "no plugin node in this file"),
            );
            return Err(diags);
        }
        [_, second, ..] => {
            diags.push(
                Diag::input("E-MANIFEST", "a manifest file declares exactly one plugin")
                    .at(src, k::name_span(second), "second plugin")
                    .with_help("put each plugin in its own file"),
            );
            return Err(diags);
        }
    };
    let (name, span) = match k::string_arg(src, node, "the kind's name") {
        Ok(x) => x,
        Err(e) => {
            diags.push(e);
            return Err(diags);
        }
    };
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
        resources: Vec::new(),
        outputs: Vec::new(),
        files: Vec::new(),
        source: src.clone(),
        span,
        dir: dir.map(Path::to_path_buf),
    };
    let mut exec_seen: Option<SourceSpan> = None;
    for child in k::children(node) {
        let r = match k::name(child) {
            "doc" => k::string_arg(src, child, "the documentation").map(|(s, _)| m.doc = s),
            "run" => set_once(src, child, &mut exec_seen).and_then(|_| {
                parse_run(src, child, dir).map(|(e, f)| {
                    m.exec = e;
                    m.files.extend(f);
                })
            }),
            "builtin" => set_once(src, child, &mut exec_seen)
                .and_then(|_| k::string_arg(src, child, "the built-in's name"))
                .map(|(s, _)| m.exec = Exec::Builtin { name: s }),
            "param" => parse_param(src, child).and_then(|p| {
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
            }),
            "inputs" => parse_inputs(src, child, &mut m),
            "resource" => {
                k::string_arg(src, child, "a resource name").map(|(s, _)| m.resources.push(s))
            }
            "depends" => parse_depends(src, child, dir).map(|f| m.files.extend(f)),
            "output" => k::string_arg(src, child, "the output file's name").and_then(|(s, _)| {
                let doc = k::string_prop(src, child, "doc")?
                    .map(|(d, _)| d)
                    .unwrap_or_default();
                m.outputs.push(OutputDoc { name: s, doc });
                Ok(())
            }),
            _ => Err(k::unknown_node(src, child, "a plugin", MANIFEST_NODES)),
        };
        if let Err(e) = r {
            diags.push(e);
        }
    }
    if exec_seen.is_none() {
        diags.push(
            Diag::input(
                "E-MANIFEST",
                format!(
                    "plugin `{}` says neither how to run nor which built-in it is",
                    m.name
                ),
            )
            .at(src, span, "this plugin")
            .with_help(
                "add `run \"program\" \"arg\"...` (an external program) or `builtin \"name\"`",
            ),
        );
    }
    diags.into_result(m)
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
        if !p.exists() {
            return Err(
                Diag::env("E-PROGRAM", format!("declared dependency `{s}` not found"))
                    .at(src, e.span(), "no such file")
                    .with_help("paths in `depends` are relative to the manifest's folder"),
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
                let KdlValue::String(t) = e.value() else {
                    return Err(Diag::input("E-MANIFEST", "`type` must be a string").at(
                        src,
                        e.span(),
                        "here",
                    ));
                };
                spec.ty = ParamType::parse(t).ok_or_else(|| {
                    Diag::input("E-MANIFEST", format!("unknown parameter type `{t}`"))
                        .at(src, e.span(), "unknown type")
                        .with_help("types: int, float, bool, string, path, list<int|float|bool|string|path>")
                })?;
                ty_seen = true;
            }
            "default" => default_entry = Some(e),
            "doc" => {
                if let KdlValue::String(s) = e.value() {
                    spec.doc = s.clone();
                }
            }
            "min" | "max" => {
                let x =
                    match e.value() {
                        KdlValue::Integer(i) => *i as f64,
                        KdlValue::Float(f) => *f,
                        _ => {
                            return Err(Diag::input(
                                "E-MANIFEST",
                                format!("`{key}` must be a number"),
                            )
                            .at(src, e.span(), "here"));
                        }
                    };
                if key == "min" {
                    spec.min = Some(x)
                } else {
                    spec.max = Some(x)
                }
            }
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
        let v = value_from_args(&[e.value()], &spec.ty).map_err(|(_, msg)| {
            Diag::input(
                "E-MANIFEST",
                format!("bad default for `{}`: {msg}", spec.name),
            )
            .at(src, e.span(), "here")
        })?;
        spec.default = Some(v);
    }
    for child in k::children(node) {
        match k::name(child) {
            "choices" => {
                let elem = match &spec.ty {
                    ParamType::List(e) => (**e).clone(),
                    t => t.clone(),
                };
                for e in k::args(child) {
                    let v =
                        crate::dsl::value::scalar_from_kdl(e.value(), &elem).map_err(|msg| {
                            Diag::input("E-MANIFEST", format!("bad choice: {msg}")).at(
                                src,
                                e.span(),
                                "here",
                            )
                        })?;
                    spec.choices.push(v);
                }
            }
            "default" => {
                let entries = k::args(child);
                let values: Vec<&KdlValue> = entries.iter().map(|e| e.value()).collect();
                let v = value_from_args(&values, &spec.ty).map_err(|(_, msg)| {
                    Diag::input(
                        "E-MANIFEST",
                        format!("bad default for `{}`: {msg}", spec.name),
                    )
                    .at(src, k::name_span(child), "here")
                })?;
                spec.default = Some(v);
            }
            _ => {
                return Err(k::unknown_node(
                    src,
                    child,
                    "a param",
                    &["choices", "default"],
                ));
            }
        }
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
