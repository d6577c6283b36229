//! Hugging Face checkpoint folders: `config.json` + `model.safetensors`
//! (+ `tokenizer.json`, copied by whoever saves). Parameter names are HF's
//! (`model.encoder.layers.0.self_attn.q_proj.weight`, ...); linear weights are
//! stored `[out, in]` there and `[in, out]` in burn, so they are transposed
//! on the way in and out. The tied output projection is stored once, as
//! `model.shared.weight`, as `save_pretrained` does.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::config::BartConfig;
use super::generation_config::GenerationConfig;
use super::model::{Attention, Bart};

// `save` writes f32 values in memory order, and safetensors is little-endian.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "model saving assumes a little-endian target"
);

/// One parameter slot, named as HF names it.
enum Slot<'a> {
    Linear(&'a mut Linear),
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

/// A host tensor: shape and row-major f32 values.
struct Host {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn host<const D: usize>(t: Tensor<D>) -> Host {
    let shape = t.dims().to_vec();
    Host {
        shape,
        values: super::super::to_vec(t),
    }
}

/// `[r, c]` -> `[c, r]`, in tiles that stay in cache and bands of output
/// rows on all cores: the naive loop's strided writes made this most of a
/// BART-large load.
fn transpose(h: &Host) -> Host {
    use rayon::prelude::*;
    const TILE: usize = 64;
    let (r, c) = (h.shape[0], h.shape[1]);
    let mut values = vec![0.0; r * c];
    if r > 0 {
        values
            .par_chunks_mut(TILE * r)
            .enumerate()
            .for_each(|(band, out)| {
                let j0 = band * TILE;
                for i0 in (0..r).step_by(TILE) {
                    for (dj, row) in out.chunks_exact_mut(r).enumerate() {
                        let j = j0 + dj;
                        let tile = &mut row[i0..(i0 + TILE).min(r)];
                        for (di, x) in tile.iter_mut().enumerate() {
                            *x = h.values[(i0 + di) * c + j];
                        }
                    }
                }
            });
    }
    Host {
        shape: vec![c, r],
        values,
    }
}

fn param1(h: Host, device: &Device) -> Param<Tensor<1>> {
    let n = h.values.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(h.values, [n]), device))
}

fn param2(h: Host, device: &Device) -> Param<Tensor<2>> {
    let shape = [h.shape[0], h.shape[1]];
    Param::from_tensor(Tensor::from_data(TensorData::new(h.values, shape), device))
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(out)
}

fn read_view(name: &str, v: &TensorView<'_>) -> Result<Host, String> {
    let data = v.data();
    let values: Vec<f32> = match v.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(format!(
                "tensor `{name}` has dtype {other:?}; expected a float type"
            ));
        }
    };
    Ok(Host {
        shape: v.shape().to_vec(),
        values,
    })
}

/// `path` mapped into memory: pages are read as the tensors are converted,
/// and no second copy of the file is held.
fn map_file(path: &Path) -> Result<memmap2::Mmap, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    // SAFETY: the map is read-only and lives only while this load converts
    // it. The cache never rewrites a file in place; a user's folder truncated
    // by another process during the load would fault the read, as it would
    // for `safetensors` in Python, which maps files the same way.
    unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// A 2-d parameter's shape without initialising it: the skeleton that a
/// load fills in is never randomly initialised (406M normal samples for
/// BART-large).
fn dims2(p: &Param<Tensor<2>>) -> [usize; 2] {
    let shape = p.lazy_shape();
    [shape[0], shape[1]]
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
    let st_path = dir.join("model.safetensors");
    if !st_path.exists() {
        let hint = if dir.join("pytorch_model.bin").exists() {
            " (this folder has pytorch_model.bin: convert it with `transformers` \
             `save_pretrained(..., safe_serialization=True)`)"
        } else {
            ""
        };
        return Err(format!("`{}` does not exist{hint}", st_path.display()));
    }
    let bytes = map_file(&st_path)?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", st_path.display()))?;
    let mut views: HashMap<String, TensorView<'_>> = file.tensors().into_iter().collect();
    // BartModel checkpoints have no `model.` prefix.
    let prefixed = views.keys().any(|k| k.starts_with("model."));
    let key = |name: &str| {
        if prefixed {
            name.to_string()
        } else {
            name.strip_prefix("model.").unwrap_or(name).to_string()
        }
    };
    let take = |views: &mut HashMap<String, TensorView<'_>>,
                name: &str,
                shape: &[usize]|
     -> Result<Host, String> {
        let k = key(name);
        let v = views.remove(&k).ok_or_else(|| {
            format!(
                "`{}` has no tensor `{k}`: is it a BART checkpoint of this config?",
                st_path.display()
            )
        })?;
        let h = read_view(&k, &v)?;
        if h.shape != shape {
            return Err(format!(
                "tensor `{k}` has shape {:?}, config.json implies {shape:?}",
                h.shape
            ));
        }
        Ok(h)
    };

    let mut model = Bart::new(&config, device)?;
    let d = config.d_model;
    let v = config.vocab_size;
    for (name, slot) in slots(&mut model) {
        match slot {
            Slot::Linear(l) => {
                let [d_in, d_out] = dims2(&l.weight);
                let w = take(&mut views, &format!("{name}.weight"), &[d_out, d_in])?;
                l.weight = param2(transpose(&w), device);
                if l.bias.is_some() {
                    l.bias = Some(param1(
                        take(&mut views, &format!("{name}.bias"), &[d_out])?,
                        device,
                    ));
                }
            }
            Slot::Norm(n) => {
                let dn = n.gamma.lazy_shape().num_elements();
                n.gamma = param1(take(&mut views, &format!("{name}.weight"), &[dn])?, device);
                n.beta = Some(param1(
                    take(&mut views, &format!("{name}.bias"), &[dn])?,
                    device,
                ));
            }
            Slot::Embedding(e) => {
                let dims = dims2(&e.weight);
                e.weight = param2(take(&mut views, &format!("{name}.weight"), &dims)?, device);
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
    let found = tied
        .iter()
        .find(|n| views.contains_key(&key(n)))
        .ok_or_else(|| {
            format!(
                "`{}` has no token embedding (model.shared.weight)",
                st_path.display()
            )
        })?;
    model.shared.weight = param2(take(&mut views, found, &[v, d])?, device);
    for n in tied {
        views.remove(&key(n));
    }
    if let Some(view) = views.remove("final_logits_bias") {
        let h = read_view("final_logits_bias", &view)?;
        if h.values.len() != v {
            return Err(format!(
                "final_logits_bias has {} values, the vocabulary {v}",
                h.values.len()
            ));
        }
        model.final_logits_bias = param1(h, device);
    }
    let mut unused: Vec<String> = views.into_keys().collect();
    unused.sort();
    Ok((model, LoadReport { unused }))
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

    // The values as they are (safetensors is little-endian, as are the
    // targets efrlhf builds for), streamed to the file: no byte copy of the model.
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, h)| {
            TensorView::new(Dtype::F32, h.shape.clone(), bytemuck::cast_slice(&h.values))
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("tensor `{k}`: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, Some(meta), &path)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    write_file(&dir.join("config.json"), model.config.to_json().as_bytes())?;
    let generation = model.config.generation.to_json(&model.config);
    write_file(&dir.join("generation_config.json"), generation.as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_precision_values_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
