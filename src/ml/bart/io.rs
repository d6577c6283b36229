//! Hugging Face checkpoint folders: `config.json` + `model.safetensors`
//! (+ `tokenizer.json`, copied by whoever saves). Parameter names are HF's
//! (`model.encoder.layers.0.self_attn.q_proj.weight`, ...); linear weights are
//! stored `[out, in]` there and `[in, out]` in burn, so they are transposed
//! on the way in and out. The tied output projection is stored once, as
//! `model.shared.weight`, as `save_pretrained` does.

use std::collections::BTreeMap;
use std::path::Path;

use burn::nn::{Embedding, LayerNorm};
use burn::tensor::Device;

use super::config::BartConfig;
use super::generation_config::GenerationConfig;
use super::model::{Attention, Bart};
use crate::ml::checkpoint::{
    Checkpoint, Host, dims2, host, param1, param2, transpose, write, write_file,
};
use crate::ml::lora::Proj;

/// One parameter slot, named as HF names it.
enum Slot<'a> {
    Linear(&'a mut Proj),
    Norm(&'a mut LayerNorm),
    Embedding(&'a mut Embedding),
}

fn attention<'a>(p: &str, a: &'a mut Attention, out: &mut Vec<(String, Slot<'a>)>) {
    out.push((format!("{p}.k_proj"), Slot::Linear(&mut a.k_proj)));
    out.push((format!("{p}.v_proj"), Slot::Linear(&mut a.v_proj)));
    out.push((format!("{p}.q_proj"), Slot::Linear(&mut a.q_proj)));
    out.push((format!("{p}.out_proj"), Slot::Linear(&mut a.out_proj)));
}

/// Every slot except the shared embedding and the logits bias.
fn slots(model: &mut Bart) -> Vec<(String, Slot<'_>)> {
    let mut out = Vec::new();
    let enc = &mut model.encoder;
    out.push((
        "model.encoder.embed_positions".into(),
        Slot::Embedding(&mut enc.embed_positions),
    ));
    out.push((
        "model.encoder.layernorm_embedding".into(),
        Slot::Norm(&mut enc.layernorm_embedding),
    ));
    for (i, l) in enc.layers.iter_mut().enumerate() {
        let p = format!("model.encoder.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut l.self_attn, &mut out);
        out.push((
            format!("{p}.self_attn_layer_norm"),
            Slot::Norm(&mut l.self_attn_layer_norm),
        ));
        out.push((format!("{p}.fc1"), Slot::Linear(&mut l.ffn.fc1)));
        out.push((format!("{p}.fc2"), Slot::Linear(&mut l.ffn.fc2)));
        out.push((
            format!("{p}.final_layer_norm"),
            Slot::Norm(&mut l.final_layer_norm),
        ));
    }
    let dec = &mut model.decoder;
    out.push((
        "model.decoder.embed_positions".into(),
        Slot::Embedding(&mut dec.embed_positions),
    ));
    out.push((
        "model.decoder.layernorm_embedding".into(),
        Slot::Norm(&mut dec.layernorm_embedding),
    ));
    for (i, l) in dec.layers.iter_mut().enumerate() {
        let p = format!("model.decoder.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut l.self_attn, &mut out);
        out.push((
            format!("{p}.self_attn_layer_norm"),
            Slot::Norm(&mut l.self_attn_layer_norm),
        ));
        attention(&format!("{p}.encoder_attn"), &mut l.encoder_attn, &mut out);
        out.push((
            format!("{p}.encoder_attn_layer_norm"),
            Slot::Norm(&mut l.encoder_attn_layer_norm),
        ));
        out.push((format!("{p}.fc1"), Slot::Linear(&mut l.ffn.fc1)));
        out.push((format!("{p}.fc2"), Slot::Linear(&mut l.ffn.fc2)));
        out.push((
            format!("{p}.final_layer_norm"),
            Slot::Norm(&mut l.final_layer_norm),
        ));
    }
    out
}

/// The linear projections of `model` by HF name (not the output layer).
pub(crate) fn projections(model: &mut Bart) -> Vec<(String, &mut Proj)> {
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
    /// Tensors in the file that the model does not use.
    pub unused: Vec<String>,
}

/// Loads a model from an HF folder (or a `model.safetensors` inside it).
pub fn load(dir: &Path, device: &Device) -> Result<(Bart, LoadReport), String> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| format!("cannot read `{}`: {e}", cfg_path.display()))?;
    let mut config =
        BartConfig::from_json(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    config.generation = GenerationConfig::read(dir, &config.extra)?;
    let mut ckpt = Checkpoint::open(dir)?;
    // BartModel checkpoints have no `model.` prefix.
    let prefixed = ckpt.any_prefixed("model.");
    let key = |name: &str| {
        if prefixed {
            name.to_string()
        } else {
            name.strip_prefix("model.").unwrap_or(name).to_string()
        }
    };
    let mut take = |name: &str, shape: &[usize]| -> Result<Host, String> {
        ckpt.take_shaped(&key(name), shape)
    };

    let mut model = Bart::new(&config, device)?;
    let d = config.d_model;
    let v = config.vocab_size;
    for (name, slot) in slots(&mut model) {
        match slot {
            Slot::Linear(l) => {
                let [d_in, d_out] = dims2(&l.weight);
                let w = take(&format!("{name}.weight"), &[d_out, d_in])?;
                l.weight = param2(transpose(&w), device);
                if l.bias.is_some() {
                    l.bias = Some(param1(take(&format!("{name}.bias"), &[d_out])?, device));
                }
            }
            Slot::Norm(n) => {
                let dn = n.gamma.lazy_shape().num_elements();
                n.gamma = param1(take(&format!("{name}.weight"), &[dn])?, device);
                n.beta = Some(param1(take(&format!("{name}.bias"), &[dn])?, device));
            }
            Slot::Embedding(e) => {
                let dims = dims2(&e.weight);
                e.weight = param2(take(&format!("{name}.weight"), &dims)?, device);
            }
        }
    }
    // The shared embedding under any of its tied names.
    let tied = [
        "model.shared.weight",
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
        "lm_head.weight",
    ];
    let found = tied.iter().find(|n| ckpt.has(&key(n))).ok_or_else(|| {
        format!(
            "{} has no token embedding (model.shared.weight)",
            ckpt.describe()
        )
    })?;
    model.shared.weight = param2(ckpt.take_shaped(&key(found), &[v, d])?, device);
    for n in tied {
        ckpt.take(&key(n))?;
    }
    if let Some(h) = ckpt.take("final_logits_bias")? {
        if h.values.len() != v {
            return Err(format!(
                "final_logits_bias has {} values, the vocabulary {v}",
                h.values.len()
            ));
        }
        model.final_logits_bias = param1(h, device);
    }
    Ok((
        model,
        LoadReport {
            unused: ckpt.untaken(),
        },
    ))
}

/// Writes `config.json`, `generation_config.json` and `model.safetensors` into `dir`.
pub fn save(model: &Bart, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let mut m = model.clone();
    let mut tensors: BTreeMap<String, Host> = BTreeMap::new();
    for (name, slot) in slots(&mut m) {
        match slot {
            Slot::Linear(l) => {
                tensors.insert(format!("{name}.weight"), transpose(&host(l.weight.val())));
                if let Some(b) = &l.bias {
                    tensors.insert(format!("{name}.bias"), host(b.val()));
                }
            }
            Slot::Norm(n) => {
                tensors.insert(format!("{name}.weight"), host(n.gamma.val()));
                if let Some(b) = &n.beta {
                    tensors.insert(format!("{name}.bias"), host(b.val()));
                }
            }
            Slot::Embedding(e) => {
                tensors.insert(format!("{name}.weight"), host(e.weight.val()));
            }
        }
    }
    tensors.insert(
        "model.shared.weight".into(),
        host(model.shared.weight.val()),
    );
    let mut bias = host(model.final_logits_bias.val());
    bias.shape = vec![1, model.config.vocab_size];
    tensors.insert("final_logits_bias".into(), bias);

    write(&tensors, &dir.join("model.safetensors"))?;
    write_file(&dir.join("config.json"), model.config.to_json().as_bytes())?;
    let generation = model.config.generation.to_json(&model.config);
    write_file(&dir.join("generation_config.json"), generation.as_bytes())
}
