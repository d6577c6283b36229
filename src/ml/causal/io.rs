//! Llama-family checkpoint folders: `config.json`, `generation_config.json`
//! and safetensors (one file or shards; f32, bf16 or f16) under HF's names
//! (`model.layers.0.self_attn.q_proj.weight`, ...). Linear weights are
//! `[out, in]` there and `[in, out]` in burn. A tied model's file has no
//! `lm_head.weight` (transformers drops the alias on save), and a saved one
//! has none either; `lm_head.weight` alone also serves as the embedding of a
//! tied checkpoint that kept only it.

use std::collections::BTreeMap;
use std::path::Path;

use burn::nn::{Embedding, RmsNorm};
use burn::tensor::Device;
use serde_json::{Map, Value};

use super::config::CausalConfig;
use super::model::{Attention, CausalLm};
use crate::ml::checkpoint::{
    Checkpoint, Host, dims2, host, param1, param2, transpose, write, write_file,
};
use crate::ml::lora::Proj;

/// One parameter slot, named as HF names it.
enum Slot<'a> {
    Linear(&'a mut Proj),
    Norm(&'a mut RmsNorm),
    Embedding(&'a mut Embedding),
}

fn attention<'a>(p: &str, a: &'a mut Attention, out: &mut Vec<(String, Slot<'a>)>) {
    out.push((format!("{p}.q_proj"), Slot::Linear(&mut a.q_proj)));
    out.push((format!("{p}.k_proj"), Slot::Linear(&mut a.k_proj)));
    out.push((format!("{p}.v_proj"), Slot::Linear(&mut a.v_proj)));
    out.push((format!("{p}.o_proj"), Slot::Linear(&mut a.o_proj)));
    if let Some(n) = &mut a.q_norm {
        out.push((format!("{p}.q_norm"), Slot::Norm(n)));
    }
    if let Some(n) = &mut a.k_norm {
        out.push((format!("{p}.k_norm"), Slot::Norm(n)));
    }
}

/// Every slot but the token embedding and the output projection.
fn slots(model: &mut CausalLm) -> Vec<(String, Slot<'_>)> {
    let mut out = Vec::new();
    for (i, l) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut l.self_attn, &mut out);
        out.push((
            format!("{p}.mlp.gate_proj"),
            Slot::Linear(&mut l.mlp.gate_proj),
        ));
        out.push((format!("{p}.mlp.up_proj"), Slot::Linear(&mut l.mlp.up_proj)));
        out.push((
            format!("{p}.mlp.down_proj"),
            Slot::Linear(&mut l.mlp.down_proj),
        ));
        out.push((
            format!("{p}.input_layernorm"),
            Slot::Norm(&mut l.input_layernorm),
        ));
        out.push((
            format!("{p}.post_attention_layernorm"),
            Slot::Norm(&mut l.post_attention_layernorm),
        ));
    }
    out.push(("model.norm".into(), Slot::Norm(&mut model.norm)));
    out
}

/// The linear projections of `model` by HF name (not the output layer).
pub(crate) fn projections(model: &mut CausalLm) -> Vec<(String, &mut Proj)> {
    slots(model)
        .into_iter()
        .filter_map(|(name, slot)| match slot {
            Slot::Linear(p) => Some((name, p)),
            _ => None,
        })
        .collect()
}

/// What loading found besides the model's parameters.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Tensors in the files that the model does not use (a `score` head, say).
    pub unused: Vec<String>,
}

/// Reads `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<CausalConfig, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    CausalConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `generation_config.json`'s fields, if the folder has one.
pub fn read_generation_config(dir: &Path) -> Result<Map<String, Value>, String> {
    let path = dir.join("generation_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Map::new());
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
    v.as_object()
        .cloned()
        .ok_or_else(|| format!("{}: not a JSON object", path.display()))
}

fn load_slot(
    ckpt: &mut Checkpoint,
    name: &str,
    slot: Slot<'_>,
    device: &Device,
) -> Result<(), String> {
    match slot {
        Slot::Linear(l) => {
            let [d_in, d_out] = dims2(&l.weight);
            let w = ckpt.take_shaped(&format!("{name}.weight"), &[d_out, d_in])?;
            l.weight = param2(transpose(&w), device);
            if l.bias.is_some() {
                l.bias = Some(param1(
                    ckpt.take_shaped(&format!("{name}.bias"), &[d_out])?,
                    device,
                ));
            }
        }
        Slot::Norm(n) => {
            let dn = n.gamma.lazy_shape().num_elements();
            n.gamma = param1(ckpt.take_shaped(&format!("{name}.weight"), &[dn])?, device);
        }
        Slot::Embedding(e) => {
            let dims = dims2(&e.weight);
            e.weight = param2(ckpt.take_shaped(&format!("{name}.weight"), &dims)?, device);
        }
    }
    Ok(())
}

/// Loads a model from an HF folder.
pub fn load(dir: &Path, device: &Device) -> Result<(CausalLm, LoadReport), String> {
    let config = read_config(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    let mut model = CausalLm::new(&config, device)?;
    model.generation = read_generation_config(dir)?;
    for (name, slot) in slots(&mut model) {
        load_slot(&mut ckpt, &name, slot, device)?;
    }
    let (v, d) = (config.vocab_size, config.hidden_size);
    let embed = match ckpt.take("model.embed_tokens.weight")? {
        Some(h) => h,
        // A tied checkpoint may keep the weight under the head's name only.
        None if config.tie_word_embeddings => ckpt.take_shaped("lm_head.weight", &[v, d])?,
        None => ckpt.take_shaped("model.embed_tokens.weight", &[v, d])?,
    };
    if embed.shape != [v, d] {
        return Err(format!(
            "tensor `model.embed_tokens.weight` has shape {:?}, config.json implies {:?}",
            embed.shape,
            [v, d]
        ));
    }
    model.embed_tokens.weight = param2(embed, device);
    // A sequence classifier has a `score` head instead of `lm_head`.
    let classifier = config.is_classifier() && !ckpt.has("lm_head.weight");
    match &mut model.lm_head {
        Some(_) if classifier => {}
        Some(head) => load_slot(&mut ckpt, "lm_head", Slot::Linear(head), device)?,
        // transformers ignores a tied model's stored head; so does this.
        None => {
            ckpt.take("lm_head.weight")?;
        }
    }
    Ok((
        model,
        LoadReport {
            unused: ckpt.untaken(),
        },
    ))
}

/// The model's tensors under HF's names; `lm_head.weight` only when untied
/// and `head` is asked for (a sequence classifier has none).
pub(crate) fn tensors(model: &CausalLm, head: bool) -> BTreeMap<String, Host> {
    let mut m = model.clone();
    let mut tensors: BTreeMap<String, Host> = BTreeMap::new();
    let mut put = |name: String, slot: Slot<'_>| match slot {
        Slot::Linear(l) => {
            tensors.insert(format!("{name}.weight"), transpose(&host(l.weight.val())));
            if let Some(b) = &l.bias {
                tensors.insert(format!("{name}.bias"), host(b.val()));
            }
        }
        Slot::Norm(n) => {
            tensors.insert(format!("{name}.weight"), host(n.gamma.val()));
        }
        Slot::Embedding(e) => {
            tensors.insert(format!("{name}.weight"), host(e.weight.val()));
        }
    };
    put(
        "model.embed_tokens".into(),
        Slot::Embedding(&mut m.embed_tokens.clone()),
    );
    if let Some(lm_head) = m.lm_head.clone().as_mut().filter(|_| head) {
        put("lm_head".into(), Slot::Linear(lm_head));
    }
    for (name, slot) in slots(&mut m) {
        put(name, slot);
    }
    tensors
}

/// Writes `config.json`, `generation_config.json` (when the model has
/// generation fields) and `model.safetensors` into `dir`.
pub fn save(model: &CausalLm, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    write(&tensors(model, true), &dir.join("model.safetensors"))?;
    write_file(&dir.join("config.json"), model.config.to_json().as_bytes())?;
    let generation = &model.generation;
    if !generation.is_empty() {
        let text = serde_json::to_string_pretty(&Value::Object(generation.clone()))
            .unwrap_or_default()
            + "\n";
        write_file(&dir.join("generation_config.json"), text.as_bytes())?;
    }
    Ok(())
}
