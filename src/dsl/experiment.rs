//! Experiment files: `experiment`, `stage` and `sweep` nodes, read into
//! declarations that keep a span for everything. Checking against the kinds'
//! manifests happens in `graph`, which knows the registry.

use std::path::{Path, PathBuf};

use kdl::{KdlNode, KdlValue};
use miette::SourceSpan;

use super::kdl_util as k;
use super::remote::{RemoteDecl, parse_remote_node};
use super::requests::{Requests, parse_requests};
use super::tracking::{TrackTarget, parse_tracking};
use crate::error::{Diag, Diags, SourceFile};

/// Children of a stage that are not parameters.
pub const RESERVED_STAGE_CHILDREN: &[&str] = &["input", "seed", "resources"];

/// Backends a user may name.
pub const BACKENDS: &[&str] = &["auto", "cpu", "wgpu"];

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub seed: i64,
    pub backend: Option<(String, SourceSpan)>,
    /// Extra manifest folders, resolved against the experiment's folder.
    pub plugin_dirs: Vec<PathBuf>,
    /// Where finished stage executions are logged (`tracking { ... }`); not part of any key.
    pub tracking: Vec<TrackTarget>,
    /// The shared remote cache (`remote "s3://..."`); not part of any key.
    pub remote: Option<RemoteDecl>,
    pub stages: Vec<StageDecl>,
    pub sweeps: Vec<SweepDecl>,
    pub source: SourceFile,
    /// The folder holding the experiment file; relative paths start here.
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StageDecl {
    pub name: String,
    pub name_span: SourceSpan,
    pub kind: String,
    pub kind_span: SourceSpan,
    pub inputs: Vec<InputDecl>,
    pub params: Vec<ParamAssign>,
    pub seed: Option<(i64, SourceSpan)>,
    /// `resources gpus=1 ...`: what it asks of the machine (not part of its key).
    pub requests: Requests,
}

/// One stage named on an `input` line: `input "sft" "phi"` or `input "phi" role="reward-model"`.
#[derive(Debug, Clone)]
pub struct InputDecl {
    pub stage: String,
    pub span: SourceSpan,
    /// The role it fills, when the line says; else the graph infers it from the format.
    pub role: Option<(String, SourceSpan)>,
}

/// `name value...` or `name=value` inside a stage.
#[derive(Debug, Clone)]
pub struct ParamAssign {
    pub name: String,
    pub span: SourceSpan,
    pub values: Vec<(KdlValue, SourceSpan)>,
    /// The `--set` that gave it, when the file did not.
    pub set_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SweepDecl {
    pub name: String,
    pub span: SourceSpan,
    pub varies: Vec<VaryDecl>,
}

/// `vary "stage.param" v1 v2 ...`
#[derive(Debug, Clone)]
pub struct VaryDecl {
    pub stage: String,
    pub param: String,
    pub target_span: SourceSpan,
    pub values: Vec<(KdlValue, SourceSpan)>,
}

impl Experiment {
    /// Each declared stage's index, by name.
    pub fn stage_index(&self) -> std::collections::HashMap<&str, usize> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect()
    }
}

/// `input "a" "b" [role="..."]`.
fn parse_input(src: &SourceFile, node: &KdlNode) -> Result<Vec<InputDecl>, Diag> {
    k::no_children(src, node)?;
    let mut role = None;
    for (key, e) in k::props(node) {
        match (key, e.value()) {
            ("role", KdlValue::String(r)) => role = Some((r.clone(), e.span())),
            ("role", _) => {
                return Err(
                    Diag::input("E-SHAPE", "`role` takes a role name as a string").at(
                        src,
                        e.span(),
                        "here",
                    ),
                );
            }
            _ => {
                return Err(Diag::input("E-SHAPE", format!("unknown property `{key}` on `input`"))
                    .at(src, e.span(), "not understood")
                    .with_help("`input` takes stage names and `role=\"...\"`; `efrlhf plugins KIND` lists a kind's roles"));
            }
        }
    }
    let args = k::args(node);
    if args.is_empty() {
        return Err(Diag::input("E-SHAPE", "`input` needs a stage name").at(
            src,
            k::name_span(node),
            "here",
        ));
    }
    args.iter()
        .map(|e| match e.value() {
            KdlValue::String(s) => Ok(InputDecl {
                stage: s.clone(),
                span: e.span(),
                role: role.clone(),
            }),
            _ => Err(
                Diag::input("E-SHAPE", "`input` takes stage names as strings").at(
                    src,
                    e.span(),
                    "here",
                ),
            ),
        })
        .collect()
}

/// Reads and parses an experiment file.
pub fn load_experiment(path: &Path) -> Result<Experiment, Diags> {
    let src = SourceFile::read(path)?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse_experiment(&src, &dir)
}

const TOP_NODES: &[&str] = &["experiment", "stage", "sweep"];
const EXPERIMENT_NODES: &[&str] = &["seed", "backend", "plugins", "tracking", "remote", "doc"];

pub fn parse_experiment(src: &SourceFile, dir: &Path) -> Result<Experiment, Diags> {
    let doc = k::parse(src)?;
    let mut diags = Diags::default();
    let default_name = src
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into());
    let mut exp = Experiment {
        name: default_name,
        seed: 0,
        backend: None,
        plugin_dirs: Vec::new(),
        tracking: Vec::new(),
        remote: None,
        stages: Vec::new(),
        sweeps: Vec::new(),
        source: src.clone(),
        dir: dir.to_path_buf(),
    };
    let mut seen_experiment: Option<SourceSpan> = None;
    for node in doc.nodes() {
        let r = match k::name(node) {
            "experiment" => {
                if let Some(prev) = seen_experiment {
                    Err(
                        Diag::input("E-SHAPE", "an experiment file has one `experiment` node")
                            .at(src, k::name_span(node), "second one")
                            .also(prev, "first one"),
                    )
                } else {
                    seen_experiment = Some(k::name_span(node));
                    parse_header(src, node, &mut exp)
                }
            }
            "stage" => parse_stage(src, node, &exp.stages).map(|s| exp.stages.push(s)),
            "sweep" => parse_sweep(src, node).map(|s| exp.sweeps.push(s)),
            _ => Err(k::unknown_node(src, node, "an experiment file", TOP_NODES)),
        };
        if let Err(e) = r {
            diags.push(e);
        }
    }
    diags.into_result(exp)
}

/// A name as messages show it: at most 40 characters.
fn shortened(name: &str) -> String {
    if name.chars().count() <= 40 {
        return name.to_string();
    }
    format!("{}...", name.chars().take(40).collect::<String>())
}

/// The longest stage or experiment name.
pub const MAX_NAME: usize = 128;

/// An experiment's name is a file-name component (plots are named after
/// it), so: letters, digits, `-`, `_`, `.`, not starting with `.`.
fn check_experiment_name(src: &SourceFile, name: &str, span: SourceSpan) -> Result<(), Diag> {
    let plain = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if plain {
        return Ok(());
    }
    Err(
        Diag::input("E-NAME", format!("invalid experiment name {:?}", shortened(name)))
            .at(src, span, "not a plain name")
            .with_help(format!(
                "use letters, digits, `-`, `_` and `.` (not first), at most {MAX_NAME} characters: files such as plots are named after it"
            )),
    )
}

fn parse_header(src: &SourceFile, node: &KdlNode, exp: &mut Experiment) -> Result<(), Diag> {
    if !k::args(node).is_empty() {
        let (name, span) = k::string_arg(src, node, "the experiment's name")?;
        check_experiment_name(src, &name, span)?;
        exp.name = name;
    }
    for child in k::children(node) {
        match k::name(child) {
            "seed" => {
                let (seed, _) = int_arg(src, child)?;
                exp.seed = seed;
            }
            "backend" => {
                let (b, span) = k::string_arg(src, child, "a backend")?;
                if !BACKENDS.contains(&b.as_str()) {
                    return Err(Diag::input("E-VALUE", format!("unknown backend `{b}`"))
                        .at(src, span, "not a backend")
                        .with_help("use \"auto\" (a GPU when one exists, else the CPU), \"cpu\" or \"wgpu\""));
                }
                exp.backend = Some((b, span));
            }
            "plugins" => {
                for e in k::args(child) {
                    let KdlValue::String(s) = e.value() else {
                        return Err(Diag::input(
                            "E-SHAPE",
                            "`plugins` takes folder names as strings",
                        )
                        .at(src, e.span(), "not a string"));
                    };
                    let p = exp.dir.join(s);
                    if !p.is_dir() {
                        return Err(Diag::input(
                            "E-PLUGIN-DIR",
                            format!("plugin folder `{s}` does not exist"),
                        )
                        .at(
                            src,
                            e.span(),
                            format!("resolved to `{}`", crate::error::display_path(&p).display()),
                        )
                        .with_help("plugin folders are relative to the experiment file"));
                    }
                    exp.plugin_dirs.push(p);
                }
            }
            "tracking" => exp.tracking = parse_tracking(src, child, &exp.dir)?,
            "remote" => exp.remote = Some(parse_remote_node(src, child, &exp.dir)?),
            "doc" => {
                k::string_arg(src, child, "a description")?;
            }
            _ => {
                return Err(k::unknown_node(
                    src,
                    child,
                    "`experiment`",
                    EXPERIMENT_NODES,
                ));
            }
        }
    }
    Ok(())
}

fn int_arg(src: &SourceFile, node: &KdlNode) -> Result<(i64, SourceSpan), Diag> {
    match k::args(node).as_slice() {
        [one] => match one.value() {
            KdlValue::Integer(i) => i64::try_from(*i).map(|v| (v, one.span())).map_err(|_| {
                Diag::input("E-VALUE", "seed does not fit 64 bits").at(src, one.span(), "here")
            }),
            other => Err(
                Diag::input("E-VALUE", format!("`{}` takes an integer", k::name(node))).at(
                    src,
                    one.span(),
                    format!("found {}", crate::dsl::value::describe_kdl(other)),
                ),
            ),
        },
        _ => Err(
            Diag::input("E-SHAPE", format!("`{}` takes one integer", k::name(node))).at(
                src,
                k::name_span(node),
                "here",
            ),
        ),
    }
}

fn parse_stage(src: &SourceFile, node: &KdlNode, earlier: &[StageDecl]) -> Result<StageDecl, Diag> {
    let (name, name_span) = k::string_arg(src, node, "the stage's name")?;
    if name.is_empty()
        || name.contains(['[', ']', '.', '"', '\n'])
        || name.chars().any(char::is_control)
        || name.chars().count() > MAX_NAME
    {
        return Err(
            Diag::input("E-NAME", format!("invalid stage name {:?}", shortened(&name)))
                .at(src, name_span, "here")
                .with_help(format!("stage names are 1 to {MAX_NAME} characters, without `[`, `]`, `.`, quotes or control characters")),
        );
    }
    if let Some(prev) = earlier.iter().find(|s| s.name == name) {
        return Err(
            Diag::input("E-DUP-STAGE", format!("stage `{name}` is declared twice"))
                .at(src, name_span, "second declaration")
                .also(prev.name_span, "first declaration")
                .with_help("give each stage a unique name"),
        );
    }
    let mut kind = None;
    for (key, e) in k::props(node) {
        if key == "kind" {
            match e.value() {
                KdlValue::String(s) => kind = Some((s.clone(), e.span())),
                _ => {
                    return Err(Diag::input("E-SHAPE", "`kind` must be a string").at(
                        src,
                        e.span(),
                        "here",
                    ));
                }
            }
        } else {
            return Err(Diag::input("E-SHAPE", format!("unknown property `{key}` on `stage`"))
                .at(src, e.span(), "not understood")
                .with_help("write `stage \"name\" kind=\"...\" { params }`; parameters go inside the block"));
        }
    }
    let Some((kind, kind_span)) = kind else {
        return Err(
            Diag::input("E-SHAPE", format!("stage `{name}` has no kind"))
                .at(src, name_span, "missing kind=\"...\"")
                .with_help(
                    "write `stage \"name\" kind=\"...\" { ... }`; `efrlhf plugins` lists the kinds",
                ),
        );
    };
    let mut stage = StageDecl {
        name,
        name_span,
        kind,
        kind_span,
        inputs: Vec::new(),
        params: Vec::new(),
        seed: None,
        requests: Requests::default(),
    };
    for child in k::children(node) {
        match k::name(child) {
            "input" => stage.inputs.extend(parse_input(src, child)?),
            "seed" => stage.seed = Some(int_arg(src, child)?),
            "resources" => stage.requests = parse_requests(src, child)?,
            pname => {
                k::no_children(src, child)?;
                if let Some(prev) = stage.params.iter().find(|p| p.name == pname) {
                    return Err(Diag::input(
                        "E-DUP-PARAM",
                        format!("parameter `{pname}` is set twice"),
                    )
                    .at(src, k::name_span(child), "second")
                    .also(prev.span, "first"));
                }
                let values = k::args(child)
                    .iter()
                    .map(|e| (e.value().clone(), e.span()))
                    .collect();
                stage.params.push(ParamAssign {
                    name: pname.to_string(),
                    span: k::name_span(child),
                    values,
                    set_by: None,
                });
                // `source "opinpref" path="data/x"`: properties are further parameters.
                for (key, e) in k::props(child) {
                    if let Some(prev) = stage.params.iter().find(|p| p.name == key) {
                        return Err(Diag::input(
                            "E-DUP-PARAM",
                            format!("parameter `{key}` is set twice"),
                        )
                        .at(src, e.span(), "second")
                        .also(prev.span, "first"));
                    }
                    stage.params.push(ParamAssign {
                        name: key.to_string(),
                        span: e.span(),
                        values: vec![(e.value().clone(), e.span())],
                        set_by: None,
                    });
                }
            }
        }
    }
    Ok(stage)
}

fn parse_sweep(src: &SourceFile, node: &KdlNode) -> Result<SweepDecl, Diag> {
    let (name, span) = k::string_arg(src, node, "the sweep's name")?;
    let mut sweep = SweepDecl {
        name,
        span,
        varies: Vec::new(),
    };
    for child in k::children(node) {
        if k::name(child) != "vary" {
            return Err(k::unknown_node(src, child, "a sweep", &["vary"]));
        }
        let args = k::args(child);
        let Some(first) = args.first() else {
            return Err(Diag::input("E-SHAPE", "`vary` needs a target and values")
                .at(src, k::name_span(child), "here")
                .with_help("write `vary \"stage.param\" 1 2 3`"));
        };
        let KdlValue::String(target) = first.value() else {
            return Err(Diag::input(
                "E-SHAPE",
                "the target of `vary` is a string \"stage.param\"",
            )
            .at(src, first.span(), "here"));
        };
        let Some((stage, param)) = target.split_once('.') else {
            return Err(Diag::input(
                "E-SHAPE",
                format!("`{target}` is not of the form \"stage.param\""),
            )
            .at(src, first.span(), "here")
            .with_help(
                "name the stage and the parameter, e.g. `vary \"rm.train-pairs\" 50 200 800`",
            ));
        };
        let values: Vec<(KdlValue, SourceSpan)> = args[1..]
            .iter()
            .map(|e| (e.value().clone(), e.span()))
            .collect();
        if values.is_empty() {
            return Err(
                Diag::input("E-SHAPE", "`vary` needs at least one value").at(
                    src,
                    first.span(),
                    "no values follow",
                ),
            );
        }
        sweep.varies.push(VaryDecl {
            stage: stage.to_string(),
            param: param.to_string(),
            target_span: first.span(),
            values,
        });
    }
    if sweep.varies.is_empty() {
        return Err(
            Diag::input("E-SHAPE", format!("sweep `{}` varies nothing", sweep.name))
                .at(src, span, "empty sweep")
                .with_help("add `vary \"stage.param\" value...`"),
        );
    }
    Ok(sweep)
}
