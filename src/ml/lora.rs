//! LoRA adapters on a model's linear projections, as PEFT defines them:
//! `y = x·W + b + (α/r)·dropout(x)·A·B` with `W` and `b` frozen, `A`
//! `[in, r]` drawn as PEFT draws it (uniform in ±1/√in) and `B` `[r, out]`
//! zero, so a fresh adapter changes nothing. Only `A` and `B` train, and the
//! delta runs as two thin matmuls (no dense `r`-rank weight is formed), so
//! the base gets no gradient and no optimizer moments. The same model with
//! its adapters dropped is the base: PPO's, DPO's and GRPO's reference,
//! without a second copy of the weights.
//!
//! Every family names its projections as transformers does (`ml::lm`'s
//! `projections`); targets, PEFT's files and merging work on those names.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use crate::rng::Rng;

/// A linear projection `x·W + b` (W `[in, out]`), with an optional adapter.
#[derive(Module, Debug)]
pub struct Proj {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The low-rank update, when LoRA is on.
    pub lora: Option<Adapter>,
}

impl From<Linear> for Proj {
    fn from(l: Linear) -> Proj {
        Proj {
            weight: l.weight,
            bias: l.bias,
            lora: None,
        }
    }
}

impl Proj {
    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        let s = self.weight.lazy_shape();
        [s[0], s[1]]
    }
}

/// The factors of one adapted projection.
#[derive(Module, Debug)]
pub struct Adapter {
    /// `[in, r]` (PEFT's `lora_A.weight` transposed).
    pub a: Param<Tensor<2>>,
    /// `[r, out]` (PEFT's `lora_B.weight` transposed).
    pub b: Param<Tensor<2>>,
    /// On the adapter's input only, as PEFT applies it.
    pub dropout: Dropout,
    /// α / r (α / √r for rsLoRA).
    #[module(skip)]
    pub scale: f64,
}

impl Adapter {
    /// `scale · dropout(x) · A · B` over the last dimension of `x`.
    pub fn delta<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product();
        let x = self.dropout.forward(x).reshape([rows, dims[D - 1]]);
        let h = x.matmul(self.a.val()) * self.scale;
        let y = h.matmul(self.b.val());
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    }

    /// `A·B·scale`, `[in, out]`: what merging adds to the weight.
    fn dense(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()) * self.scale
    }

    fn rank(&self) -> usize {
        self.a.lazy_shape()[1]
    }
}

/// Which projections get adapters.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Every projection of the blocks (PEFT's `all-linear`: not the output layer).
    AllLinear,
    /// Projections whose name is, or ends with `.` and, one of these (PEFT's matching).
    Names(Vec<String>),
}

impl Targets {
    /// `all-linear`, or names separated by spaces or commas; empty: PEFT's
    /// default for these architectures (`q_proj`, `v_proj`).
    pub fn parse(text: &str) -> Targets {
        let names: Vec<String> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        match names.as_slice() {
            [] => Targets::Names(vec!["q_proj".into(), "v_proj".into()]),
            [one] if one == "all-linear" => Targets::AllLinear,
            _ => Targets::Names(names),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Targets::AllLinear => true,
            Targets::Names(names) => names.iter().any(|t| is_named(name, t)),
        }
    }
}

/// PEFT's rule: the full name, or a suffix after a dot.
fn is_named(name: &str, target: &str) -> bool {
    name == target || name.ends_with(&format!(".{target}"))
}

/// A LoRA configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// r.
    pub rank: usize,
    /// α.
    pub alpha: f64,
    /// Dropout on the adapter's input.
    pub dropout: f64,
    /// Which projections.
    pub targets: Targets,
}

/// The last name component of each projection (`q_proj`, `fc1`, ...), for messages.
fn short_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = names.map(|n| n.rsplit('.').next().unwrap_or(n)).collect();
    set.into_iter().map(str::to_string).collect()
}

/// Checks `spec` against the projections `(name, [in, out])` of a model:
/// every target name matches some projection and the rank fits each
/// matched one. Returns the names matched.
pub fn plan(spec: &LoraSpec, projections: &[(String, [usize; 2])]) -> Result<Vec<String>, String> {
    if let Targets::Names(names) = &spec.targets {
        let unknown: Vec<&String> = names
            .iter()
            .filter(|t| !projections.iter().any(|(n, _)| is_named(n, t)))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "`lora-targets` names {} that match no layer of this model; its linear layers are {} (or use \"all-linear\")",
                quoted(&unknown),
                short_names(projections.iter().map(|(n, _)| n.as_str())).join(", ")
            ));
        }
    }
    let mut matched = Vec::new();
    for (name, [d_in, d_out]) in projections {
        if !spec.targets.matches(name) {
            continue;
        }
        let width = (*d_in).min(*d_out);
        if spec.rank > width {
            return Err(format!(
                "`lora-rank` {} is above the width of `{name}` ({d_in} -> {d_out}): a rank of at most {width} fits it",
                spec.rank
            ));
        }
        matched.push(name.clone());
    }
    Ok(matched)
}

fn quoted(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The projections of a model, by transformers' module name.
pub trait Projections {
    /// Every adaptable projection (not the output layer), by HF name.
    fn projections(&mut self) -> Vec<(String, &mut Proj)>;
}

/// Names and shapes of `model`'s projections.
pub fn shapes<M: Projections + Clone>(model: &M) -> Vec<(String, [usize; 2])> {
    let mut m = model.clone();
    m.projections()
        .into_iter()
        .map(|(n, p)| (n, p.dims()))
        .collect()
}

/// Freezes every parameter of `model` and attaches fresh adapters to the
/// projections `spec` targets, drawn from `seed`. Returns the model and how
/// many weights train.
pub fn attach<M: Projections + Module>(
    model: M,
    spec: &LoraSpec,
    seed: u64,
) -> Result<(M, usize), String> {
    let mut model = model.no_grad();
    let names = plan(spec, &shapes(&model))?;
    let mut rng = Rng::new(seed ^ 0x10_7A);
    let mut trained = 0;
    for (name, p) in model.projections() {
        if !names.contains(&name) {
            continue;
        }
        let [d_in, d_out] = p.dims();
        let device = p.weight.val().device();
        // PEFT's kaiming-uniform with a = √5: U(-1/√in, 1/√in).
        let bound = 1.0 / (d_in as f64).sqrt();
        let a: Vec<f32> = (0..d_in * spec.rank)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
            .collect();
        let a = Tensor::<2>::from_data(TensorData::new(a, [d_in, spec.rank]), &device);
        let b = Tensor::<2>::zeros([spec.rank, d_out], &device);
        p.lora = Some(adapter(a, b, spec.alpha / spec.rank as f64, spec.dropout));
        trained += spec.rank * (d_in + d_out);
    }
    Ok((model, trained))
}

fn adapter(a: Tensor<2>, b: Tensor<2>, scale: f64, dropout: f64) -> Adapter {
    Adapter {
        a: Param::from_tensor(a),
        b: Param::from_tensor(b),
        dropout: DropoutConfig::new(dropout).init(),
        scale,
    }
}

/// `model` without its adapters: the base it adapts (the tensors are shared, not copied).
pub fn base_of<M: Projections + Clone>(model: &M) -> M {
    let mut m = model.clone();
    for (_, p) in m.projections() {
        p.lora = None;
    }
    m
}

/// Whether any projection of `model` carries an adapter.
pub fn has_adapters<M: Projections + Clone>(model: &M) -> bool {
    model
        .clone()
        .projections()
        .iter()
        .any(|(_, p)| p.lora.is_some())
}

/// Folds each adapter into its weight (`W + scale·A·B`) and removes it.
pub fn merge<M: Projections>(mut model: M) -> M {
    for (_, p) in model.projections() {
        if let Some(ad) = p.lora.take() {
            let w = p.weight.val().detach() + ad.dense().detach();
            p.weight = Param::from_tensor(w).set_require_grad(false);
        }
    }
    model
}

/// What an adapter folder says about itself (`adapter_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// α.
    pub alpha: f64,
    /// Per-module α (PEFT's `alpha_pattern`), by name suffix.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Dropout on the adapter's input.
    pub dropout: f64,
    /// α/√r instead of α/r.
    pub rslora: bool,
}

/// The adapters of a model as PEFT stores them.
pub struct PeftTensors {
    /// `base_model.model.<name>.lora_A.weight` `[r, in]` and `.lora_B.weight`
    /// `[out, r]`: name, shape, f32 values.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// r.
    pub rank: usize,
    /// The adapted modules' last names (`q_proj`, ...).
    pub targets: Vec<String>,
    /// PEFT's `lora_alpha`: α·r/scale of the first adapter, so a stored
    /// scale comes back exactly.
    pub alpha: f64,
    /// α of the modules whose scale differs (an rsLoRA or per-module adapter read in).
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Dropout on the adapters' input.
    pub dropout: f64,
}

/// The adapter factors of `model` as PEFT stores them.
pub fn peft_tensors<M: Projections + Clone>(model: &M) -> PeftTensors {
    let mut m = model.clone();
    let mut out = Vec::new();
    let mut rank = 0;
    let mut names = Vec::new();
    let mut first: Option<(f64, f64)> = None;
    let mut alpha_pattern = BTreeMap::new();
    for (name, p) in m.projections() {
        let Some(ad) = &p.lora else { continue };
        rank = ad.rank();
        let alpha = ad.scale * rank as f64;
        let (a0, _) = *first.get_or_insert((alpha, ad.dropout.prob));
        if alpha != a0 {
            alpha_pattern.insert(name.clone(), alpha);
        }
        names.push(name.clone());
        let a = ad.a.val().transpose();
        let b = ad.b.val().transpose();
        for (which, t) in [("lora_A", a), ("lora_B", b)] {
            let dims = t.dims().to_vec();
            let data = crate::ml::to_vec(t.reshape([dims[0] * dims[1]]));
            out.push((
                format!("base_model.model.{name}.{which}.weight"),
                dims,
                data,
            ));
        }
    }
    let (alpha, dropout) = first.unwrap_or((8.0, 0.0));
    PeftTensors {
        tensors: out,
        rank,
        targets: short_names(names.iter().map(String::as_str)),
        alpha,
        alpha_pattern,
        dropout,
    }
}

/// Tensors of a PEFT adapter file by name, with shapes, as f32.
pub type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Attaches the adapter `tensors` (PEFT's names and layouts) to `model`,
/// freezing its base. Every adapter tensor must land on a projection of
/// matching shape; the message names the one that does not.
pub fn attach_peft<M: Projections + Module>(
    model: M,
    mut tensors: HostTensors,
    config: &AdapterConfig,
    device: &Device,
) -> Result<(M, usize), String> {
    // PEFT keeps the adapter name out of saved keys; older files may carry `.default`.
    tensors = tensors
        .into_iter()
        .map(|(k, v)| (k.replace(".default.weight", ".weight"), v))
        .collect();
    let mut model = model.no_grad();
    let mut trained = 0;
    for (name, p) in model.projections() {
        let key = |w: &str| format!("base_model.model.{name}.{w}.weight");
        let (Some(a), Some(b)) = (
            tensors.remove(&key("lora_A")),
            tensors.remove(&key("lora_B")),
        ) else {
            continue;
        };
        let [d_in, d_out] = p.dims();
        let r = a.0.first().copied().unwrap_or(0);
        if a.0 != [r, d_in] || b.0 != [d_out, r] || r == 0 {
            return Err(format!(
                "the adapter does not fit this base: `{}` is {:?} and `{}` {:?}, but the base's `{name}` maps {d_in} inputs to {d_out} outputs (expected [r, {d_in}] and [{d_out}, r]); the adapter was trained on another model",
                key("lora_A"),
                a.0,
                key("lora_B"),
                b.0
            ));
        }
        let short = name.rsplit('.').next().unwrap_or(&name);
        let alpha = config
            .alpha_pattern
            .iter()
            .find(|(k, _)| is_named(&name, k) || k.as_str() == short)
            .map_or(config.alpha, |(_, v)| *v);
        let scale = if config.rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        let a = Tensor::<2>::from_data(TensorData::new(a.1, [r, d_in]), device).transpose();
        let b = Tensor::<2>::from_data(TensorData::new(b.1, [d_out, r]), device).transpose();
        p.lora = Some(adapter(a, b, scale, config.dropout));
        trained += r * (d_in + d_out);
    }
    let stray: Vec<&String> = tensors.keys().filter(|k| k.contains("lora_")).collect();
    if let Some(first) = stray.first() {
        return Err(format!(
            "the adapter does not fit this base: its tensor `{first}` names no linear layer of it ({} such tensors); the base's layers are {}",
            stray.len(),
            short_names(shapes(&model).iter().map(|(n, _)| n.as_str())).join(", ")
        ));
    }
    if trained == 0 {
        return Err("the adapter holds no LoRA tensors (`lora_A`/`lora_B`)".into());
    }
    Ok((model, trained))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> Vec<(String, [usize; 2])> {
        vec![
            ("model.layers.0.self_attn.q_proj".into(), [16, 16]),
            ("model.layers.0.self_attn.v_proj".into(), [16, 4]),
            ("model.layers.0.mlp.up_proj".into(), [16, 40]),
        ]
    }

    fn spec(rank: usize, targets: &str) -> LoraSpec {
        LoraSpec {
            rank,
            alpha: 8.0,
            dropout: 0.0,
            targets: Targets::parse(targets),
        }
    }

    #[test]
    fn targets_match_as_peft_matches_them() {
        let got = plan(&spec(2, ""), &shapes()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(plan(&spec(2, "all-linear"), &shapes()).unwrap().len(), 3);
        assert_eq!(
            plan(&spec(2, "mlp.up_proj"), &shapes()).unwrap(),
            ["model.layers.0.mlp.up_proj"]
        );
        // A suffix must start at a dot.
        let e = plan(&spec(2, "p_proj"), &shapes()).unwrap_err();
        assert!(
            e.contains("`p_proj`") && e.contains("q_proj, up_proj, v_proj"),
            "{e}"
        );
    }

    #[test]
    fn a_rank_above_a_target_width_names_the_layer() {
        let e = plan(&spec(5, "v_proj"), &shapes()).unwrap_err();
        assert!(
            e.contains("v_proj` (16 -> 4)") && e.contains("at most 4"),
            "{e}"
        );
        assert!(plan(&spec(4, "v_proj"), &shapes()).is_ok());
    }
}
