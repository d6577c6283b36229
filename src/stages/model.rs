//! The `model` kind: a pretrained checkpoint taken as it is, so `eval` and
//! `ppo` can read a model nobody fine-tuned here (the paper's zero-shot
//! baselines). The folder is checked the way the loaders will read it
//! (configuration, safetensors header, tokenizer) before anything is stored,
//! and its files are hard-linked, else reflinked, else copied: a 1.6 GB
//! checkpoint from the Hub cache is not stored a second time where the
//! filesystem allows.

use std::fs;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::formats::model::is_model_file;
use super::kind::{Kind, Metrics, StageContext};

/// The kind's parameters.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// The Hugging Face folder (an `hf://` URI arrives as its snapshot folder).
    #[schemars(extend("x-required" = true))]
    pub pretrained: PathBuf,
}

/// The kind takes no inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inputs {}

/// The `model` kind.
pub struct ModelStage;

/// How a file reached the output folder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Placed {
    Linked,
    Copied,
}

/// Hard link, else reflink (`FICLONE`), else a copy.
fn place(src: &Path, dst: &Path) -> std::io::Result<Placed> {
    let real = fs::canonicalize(src)?;
    if fs::hard_link(&real, dst).is_ok() {
        return Ok(Placed::Linked);
    }
    let from = fs::File::open(&real)?;
    let to = fs::File::create(dst)?;
    // FICLONE: share the blocks on filesystems that can (btrfs, XFS); no copy.
    const FICLONE: libc::c_ulong = 0x4004_9409;
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open files owned here; the ioctl only reads them.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
    if rc == 0 {
        return Ok(Placed::Linked);
    }
    drop(to);
    fs::copy(&real, dst)?;
    Ok(Placed::Copied)
}

/// The number of parameters a safetensors file holds, read from its header.
fn safetensors_parameters(path: &Path) -> Result<u64, String> {
    let file =
        fs::File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    // SAFETY: the file is read-only here and not truncated while mapped (it is a
    // checkpoint the run holds; a concurrent writer would be a user error reported by the loader).
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| format!("cannot map `{}`: {e}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    Ok(meta
        .tensors()
        .values()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum())
}

/// The folder's files the model format keeps, or what is missing.
fn checked_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir)
        .map_err(|e| format!("cannot read the model folder `{}`: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_model_file)
        })
        .collect();
    files.sort();
    let sharded = !dir.join("model.safetensors").is_file()
        && dir.join("model.safetensors.index.json").is_file();
    for need in ["config.json", "tokenizer.json", "model.safetensors"] {
        let present = dir.join(need).is_file() || (need == "model.safetensors" && sharded);
        if !present {
            let hint = if need == "model.safetensors" && dir.join("pytorch_model.bin").exists() {
                " (it has pytorch_model.bin: save it with `save_pretrained(..., safe_serialization=True)`)"
            } else {
                ""
            };
            return Err(format!(
                "the model folder `{}` has no `{need}`{hint}",
                dir.display()
            ));
        }
    }
    let config = fs::read_to_string(dir.join("config.json")).map_err(|e| e.to_string())?;
    let checked = if crate::ml::causal::CausalConfig::is_causal(&config) {
        crate::ml::causal::CausalConfig::from_json(&config).map(drop)
    } else {
        crate::ml::bart::BartConfig::from_json(&config).map(drop)
    };
    checked.map_err(|e| format!("`{}`: {e}", dir.join("config.json").display()))?;
    Ok(files)
}

impl Kind for ModelStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        if p.pretrained.as_os_str().is_empty() {
            return Err("`pretrained` is required: a model folder or `hf://ORG/NAME`".into());
        }
        Ok(())
    }

    fn run(&self, p: &Params, _: &Inputs, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let files = checked_files(&p.pretrained)?;
        let parameters = files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
            .map(|f| safetensors_parameters(f))
            .sum::<Result<u64, String>>()?;
        let out = ctx.output.join("model");
        fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let (mut linked, mut bytes) = (0usize, 0u64);
        for f in &files {
            let name = f.file_name().unwrap_or_default();
            let how = place(f, &out.join(name))
                .map_err(|e| format!("cannot store `{}`: {e}", f.display()))?;
            bytes += fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            linked += usize::from(how == Placed::Linked);
            let _ = writeln!(
                ctx.log,
                "{} {}",
                if how == Placed::Linked {
                    "linked"
                } else {
                    "copied"
                },
                name.to_string_lossy()
            );
        }
        Ok(Metrics::from([
            ("parameters".to_string(), parameters as f64),
            ("files".to_string(), files.len() as f64),
            ("linked".to_string(), linked as f64),
            ("bytes".to_string(), bytes as f64),
        ]))
    }
}
