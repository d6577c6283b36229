//! PEFT's adapter folders, both ways: `adapter_config.json` and
//! `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight`
//! `[r, in]`, `.lora_B.weight` `[out, r]`), which `PeftModel.from_pretrained`
//! loads onto the base; and `efrlhf-base.json`, which says where that base
//! is so efrlhf can load the folder as a model. The base is named, never
//! copied: a result of the cache by its content digest (results are sibling
//! folders named by digest, so the name holds wherever the cache lives), or
//! an outside folder by its path and the digests of its files (checked on
//! load: an edited base is refused, not silently adapted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::checkpoint::{Host, map_file, read_view, write, write_file};
use super::lora::{self, AdapterConfig, HostTensors, Projections};

/// `adapter_config.json`.
pub const CONFIG: &str = "adapter_config.json";
/// `adapter_model.safetensors`.
pub const WEIGHTS: &str = "adapter_model.safetensors";
/// Where the base of an adapter folder is.
pub const BASE: &str = "efrlhf-base.json";

/// Whether `dir` is an adapter folder (and not a full model).
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(CONFIG).is_file() && !dir.join("config.json").is_file()
}

/// The model an adapter adapts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    /// The folder `folder` inside the cache result named `digest`.
    Result {
        /// The result's digest (its folder's name).
        digest: String,
        /// The model folder inside it.
        folder: String,
    },
    /// An outside folder, with the blake3 of the files that define it.
    Folder {
        /// Absolute.
        path: PathBuf,
        /// blake3 of its config and weights, by file name.
        files: BTreeMap<String, String>,
    },
}

impl Base {
    /// The base `dir` as a stage sees it: `result` when it is a cache
    /// result's `folder` (the result's own folder name is its digest).
    pub fn of_result(result: &Path, folder: &str) -> Base {
        Base::Result {
            digest: file_name(result),
            folder: folder.into(),
        }
    }

    /// An outside folder, its defining files hashed now.
    pub fn of_folder(dir: &Path) -> Result<Base, String> {
        let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Ok(Base::Folder {
            files: defining_files(&path)?,
            path,
        })
    }

    /// How PEFT's `base_model_name_or_path` names it: the Hub repository of
    /// a snapshot folder (`models--org--name/snapshots/<rev>`), else the path.
    fn peft_name(&self) -> String {
        let Base::Folder { path, .. } = self else {
            return String::new();
        };
        let parts: Vec<String> = path.components().map(|c| file_name(c.as_ref())).collect();
        match parts.iter().rposition(|p| p == "snapshots") {
            Some(i) if i > 0 => match parts[i - 1].strip_prefix("models--") {
                Some(repo) => repo.replacen("--", "/", 1),
                None => path.display().to_string(),
            },
            _ => path.display().to_string(),
        }
    }

    /// The base's folder, for the adapter folder `adapter` (checked).
    pub fn locate(&self, adapter: &Path) -> Result<PathBuf, String> {
        match self {
            Base::Result { digest, folder } => {
                let adapter = std::path::absolute(adapter).unwrap_or_else(|_| adapter.into());
                let results = adapter.parent().and_then(Path::parent).ok_or_else(|| {
                    format!("`{}` is not inside a result folder", adapter.display())
                })?;
                let dir = results.join(digest).join(folder);
                if !dir.is_dir() {
                    return Err(format!(
                        "the base model of the adapter `{}` (result {digest}) is no longer in the cache; rerun the stage that made it (`efrlhf run`), or pull it (`efrlhf cache pull`)",
                        adapter.display()
                    ));
                }
                Ok(dir)
            }
            Base::Folder { path, files } => {
                let now = defining_files(path).map_err(|e| {
                    format!("the base model of this adapter, `{}`: {e}", path.display())
                })?;
                if let Some((name, _)) = files.iter().find(|(n, d)| now.get(*n) != Some(*d)) {
                    return Err(format!(
                        "the base model `{}` changed since the adapter was trained on it (`{name}` differs): the adapter is refused rather than applied to another model; restore the folder or retrain",
                        path.display()
                    ));
                }
                Ok(path.clone())
            }
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// blake3 of the config and the weights of a model folder.
fn defining_files(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    let mut out = BTreeMap::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let defines = name == "config.json"
            || name == CONFIG
            || name == BASE
            || name.ends_with(".safetensors")
            || name == "model.safetensors.index.json";
        if defines {
            let bytes = map_file(&e.path())?;
            out.insert(name, blake3::hash(&bytes).to_hex().to_string());
        }
    }
    if !out.contains_key("config.json") && !out.contains_key(CONFIG) {
        return Err(format!("`{}` holds no config.json", dir.display()));
    }
    Ok(out)
}

/// Writes `model`'s adapters as a PEFT folder `dir` adapting `base`.
pub fn save<M: Projections + Clone>(
    model: &M,
    dir: &Path,
    task: &str,
    base: &Base,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let lora::PeftTensors {
        tensors,
        rank,
        targets,
        alpha,
        alpha_pattern,
        dropout,
    } = lora::peft_tensors(model);
    let hosts: BTreeMap<String, Host> = tensors
        .into_iter()
        .map(|(k, shape, values)| (k, Host { shape, values }))
        .collect();
    write(&hosts, &dir.join(WEIGHTS))?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": task,
        "base_model_name_or_path": base.peft_name(),
        "r": rank,
        "lora_alpha": alpha,
        "alpha_pattern": alpha_pattern,
        "lora_dropout": dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": Value::Null,
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
    write_file(&dir.join(CONFIG), text.as_bytes())?;
    let base = serde_json::to_string_pretty(base).unwrap_or_default() + "\n";
    write_file(&dir.join(BASE), base.as_bytes())
}

/// Where the base of the adapter folder `dir` is, as efrlhf wrote it.
pub fn base_of(dir: &Path) -> Result<Base, String> {
    let path = dir.join(BASE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        format!(
            "`{}` is a PEFT adapter without a base efrlhf can find (no {BASE}); load it onto its base with the `pretrained-adapter` parameter",
            dir.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a PEFT adapter folder: its LoRA settings and tensors. Anything
/// efrlhf cannot apply exactly (DoRA, bias training, embedding adapters,
/// another PEFT method) is refused by name.
pub fn read(dir: &Path) -> Result<(AdapterConfig, HostTensors), String> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
    let config = adapter_config(&v).map_err(|e| format!("{}: {e}", path.display()))?;
    let weights = dir.join(WEIGHTS);
    let bytes = map_file(&weights)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", weights.display()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if name.contains("lora_embedding") || name.contains("lora_magnitude") {
            return Err(format!(
                "`{}`: tensor `{name}` is an embedding or DoRA adapter, which efrlhf does not apply",
                weights.display()
            ));
        }
        let h = read_view(&name, &view)?;
        tensors.insert(name, (h.shape, h.values));
    }
    Ok((config, tensors))
}

fn adapter_config(v: &Value) -> Result<AdapterConfig, String> {
    let kind = v["peft_type"].as_str().unwrap_or("LORA");
    if kind != "LORA" {
        return Err(format!(
            "`peft_type` is {kind}: efrlhf applies LoRA adapters only"
        ));
    }
    for flag in ["use_dora", "fan_in_fan_out"] {
        if v[flag].as_bool() == Some(true) {
            return Err(format!("`{flag}` is true, which efrlhf does not apply"));
        }
    }
    if let Some(bias) = v["bias"].as_str().filter(|b| *b != "none") {
        return Err(format!(
            "`bias` is \"{bias}\": adapters that train biases are not applied (use \"none\")"
        ));
    }
    let alpha = v["lora_alpha"].as_f64().unwrap_or(8.0);
    let alpha_pattern = v["alpha_pattern"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, a)| a.as_f64().map(|a| (k.clone(), a)))
                .collect()
        })
        .unwrap_or_default();
    Ok(AdapterConfig {
        alpha,
        alpha_pattern,
        dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        rslora: v["use_rslora"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_snapshot_is_named_by_its_repository() {
        let b = Base::Folder {
            path: "/h/hub/models--Qwen--Qwen2.5-0.5B/snapshots/abc".into(),
            files: BTreeMap::new(),
        };
        assert_eq!(b.peft_name(), "Qwen/Qwen2.5-0.5B");
        let b = Base::Folder {
            path: "/data/my-model".into(),
            files: BTreeMap::new(),
        };
        assert_eq!(b.peft_name(), "/data/my-model");
    }

    #[test]
    fn what_cannot_be_applied_exactly_is_refused_by_name() {
        let e = adapter_config(&json!({"peft_type": "IA3"})).unwrap_err();
        assert!(e.contains("IA3"), "{e}");
        let e = adapter_config(&json!({"use_dora": true})).unwrap_err();
        assert!(e.contains("use_dora"), "{e}");
        let e = adapter_config(&json!({"bias": "all"})).unwrap_err();
        assert!(e.contains("\"all\""), "{e}");
        let c = adapter_config(&json!({"lora_alpha": 16, "use_rslora": true})).unwrap();
        assert!(c.rslora && c.alpha == 16.0);
    }
}
