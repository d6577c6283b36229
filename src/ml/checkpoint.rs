//! Hugging Face safetensors checkpoints, whatever the architecture: one
//! `model.safetensors` or shards listed by `model.safetensors.index.json`,
//! memory-mapped and converted tensor by tensor (f32, f64, f16 and bf16
//! widen exactly to f32); and writing f32 tensors back in name order.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Metadata, TensorView};
use safetensors::{Dtype, SafeTensors};

// `write` stores f32 values in memory order, and safetensors is little-endian.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "model saving assumes a little-endian target"
);

/// A host tensor: shape and row-major f32 values.
pub(crate) struct Host {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Host {
    let shape = t.dims().to_vec();
    Host {
        shape,
        values: super::to_vec(t),
    }
}

/// `[r, c]` -> `[c, r]`, in tiles that stay in cache and bands of output
/// rows on all cores: the naive loop's strided writes made this most of a
/// BART-large load.
pub(crate) fn transpose(h: &Host) -> Host {
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

pub(crate) fn param1(h: Host, device: &Device) -> Param<Tensor<1>> {
    let n = h.values.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(h.values, [n]), device))
}

pub(crate) fn param2(h: Host, device: &Device) -> Param<Tensor<2>> {
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

pub(crate) fn read_view(name: &str, v: &TensorView<'_>) -> Result<Host, String> {
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
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap, String> {
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
pub(crate) fn dims2(p: &Param<Tensor<2>>) -> [usize; 2] {
    let shape = p.lazy_shape();
    [shape[0], shape[1]]
}

/// The tensor files of a checkpoint folder, mapped, with the tensors not
/// yet taken.
pub(crate) struct Checkpoint {
    files: Vec<Mapped>,
    /// Tensor name -> the file that holds it, for tensors not yet taken.
    index: HashMap<String, usize>,
}

/// One mapped file with its parsed header (read once, not per tensor).
struct Mapped {
    path: PathBuf,
    bytes: memmap2::Mmap,
    header_len: usize,
    meta: Metadata,
}

impl Checkpoint {
    /// Maps `dir/model.safetensors`, or the shards its index lists.
    pub fn open(dir: &Path) -> Result<Checkpoint, String> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            shard_files(&index_path)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else {
            let hint = if dir.join("pytorch_model.bin").exists() {
                " (this folder has pytorch_model.bin: convert it with `transformers` \
                 `save_pretrained(..., safe_serialization=True)`)"
            } else {
                ""
            };
            return Err(format!(
                "`{}` has no model.safetensors (nor model.safetensors.index.json){hint}",
                dir.display()
            ));
        };
        let mut mapped = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let bytes = map_file(&path)?;
            let (header_len, meta) = SafeTensors::read_metadata(&bytes)
                .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
            for n in meta.offset_keys() {
                index.insert(n, i);
            }
            mapped.push(Mapped {
                path,
                bytes,
                header_len,
                meta,
            });
        }
        Ok(Checkpoint {
            files: mapped,
            index,
        })
    }

    /// Whether a tensor `name` is still there.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Whether any tensor name starts with `prefix`.
    pub fn any_prefixed(&self, prefix: &str) -> bool {
        self.index.keys().any(|k| k.starts_with(prefix))
    }

    /// The file that holds tensors (for messages).
    pub fn describe(&self) -> String {
        match &self.files[..] {
            [one] => format!("`{}`", one.path.display()),
            many => format!(
                "the {} shards in `{}`",
                many.len(),
                many[0].path.parent().unwrap_or(Path::new(".")).display()
            ),
        }
    }

    /// Takes tensor `name` as f32, if it is there.
    pub fn take(&mut self, name: &str) -> Result<Option<Host>, String> {
        let Some(i) = self.index.remove(name) else {
            return Ok(None);
        };
        let f = &self.files[i];
        let bad = |e: String| format!("`{}`: tensor `{name}`: {e}", f.path.display());
        let info = f
            .meta
            .info(name)
            .ok_or_else(|| bad("not in the header".into()))?;
        let (start, end) = info.data_offsets;
        let data = f
            .bytes
            .get(8 + f.header_len + start..8 + f.header_len + end)
            .ok_or_else(|| bad("its data lies past the end of the file".into()))?;
        let view = TensorView::new(info.dtype, info.shape.clone(), data)
            .map_err(|e| bad(e.to_string()))?;
        read_view(name, &view).map(Some)
    }

    /// Takes tensor `name`, which must have `shape`.
    pub fn take_shaped(&mut self, name: &str, shape: &[usize]) -> Result<Host, String> {
        let h = self.take(name)?.ok_or_else(|| {
            format!(
                "{} has no tensor `{name}`: is it a checkpoint of this config?",
                self.describe()
            )
        })?;
        if h.shape != shape {
            return Err(format!(
                "tensor `{name}` has shape {:?}, config.json implies {shape:?}",
                h.shape
            ));
        }
        Ok(h)
    }

    /// Names not taken, sorted.
    pub fn untaken(self) -> Vec<String> {
        let mut names: Vec<String> = self.index.into_keys().collect();
        names.sort();
        names
    }
}

/// The shard files an index names, in order, each once.
fn shard_files(index_path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index_path)
        .map_err(|e| format!("cannot read `{}`: {e}", index_path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", index_path.display()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{}: no `weight_map` object", index_path.display()))?;
    let mut files: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f.as_str().ok_or_else(|| {
            format!(
                "{}: a weight_map value is not a file name",
                index_path.display()
            )
        })?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(format!(
                "{}: shard `{f}` is not a file name in this folder",
                index_path.display()
            ));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    Ok(files)
}

/// Writes f32 `tensors` to `path` in name order, values streamed as they are.
pub(crate) fn write(tensors: &BTreeMap<String, Host>, path: &Path) -> Result<(), String> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, h)| {
            TensorView::new(Dtype::F32, h.shape.clone(), bytemuck::cast_slice(&h.values))
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("tensor `{k}`: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// `std::fs::write` with the path in the error.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
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
