//! The Llama architecture as transformers computes it, with the switches of
//! the family (`config.rs`): pre-norm blocks of grouped-query attention and a
//! gated MLP, RMSNorm in f32, RoPE in the rotate-half layout read at each
//! row's own positions (left padding), q/k biases (Qwen2), per-head q/k
//! RMSNorm before RoPE (Qwen3), a tied or separate output projection.
//! Field names follow HF's parameter names (see `io.rs`).

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, Int, Tensor, TensorData, activation as act};

use super::config::CausalConfig;
use super::rope::Rope;
use crate::ml::bart::config::Activation;
use crate::ml::fused;
use crate::ml::lora::Proj;
use crate::ml::precision::to_f32;
use crate::ml::recompute;

/// Added to attention scores at masked keys: finite (as HF's `finfo.min`),
/// so a row with every key masked (a left pad's query) stays finite.
const MASKED: f32 = -1e9;

fn linear(d_in: usize, d_out: usize, bias: bool, std: f64, device: &Device) -> Proj {
    let mut l = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    if bias {
        l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    Proj::from(l)
}

fn rms_norm(d: usize, eps: f64, device: &Device) -> RmsNorm {
    RmsNormConfig::new(d).with_epsilon(eps).init(device)
}

/// `norm(x)` as transformers computes it in half precision: normalised in
/// f32, cast back, then scaled by the weight (burn divides in the input's precision).
fn rms<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return norm.forward(x);
    }
    let x = x.cast(DType::F32);
    let rms = (x.clone().square().mean_dim(D - 1) + norm.epsilon).sqrt();
    (x / rms).cast(dtype) * norm.gamma.val().unsqueeze()
}

#[derive(Module, Debug)]
pub(crate) struct Attention {
    pub q_proj: Proj,
    pub k_proj: Proj,
    pub v_proj: Proj,
    pub o_proj: Proj,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    #[module(skip)]
    pub heads: usize,
    #[module(skip)]
    pub kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

/// One layer's keys and values so far, `[b, kv_heads, t, head_dim]`, after RoPE.
pub type LayerCache = Option<(Tensor<4>, Tensor<4>)>;

impl Attention {
    fn new(c: &CausalConfig, device: &Device) -> Attention {
        let (d, hd, std) = (c.hidden_size, c.head_dim, c.initializer_range);
        let norm = || c.qk_norm.then(|| rms_norm(hd, c.rms_norm_eps, device));
        Attention {
            q_proj: linear(d, c.num_attention_heads * hd, c.qkv_bias, std, device),
            k_proj: linear(d, c.num_key_value_heads * hd, c.qkv_bias, std, device),
            v_proj: linear(d, c.num_key_value_heads * hd, c.qkv_bias, std, device),
            o_proj: linear(c.num_attention_heads * hd, d, c.o_bias, std, device),
            q_norm: norm(),
            k_norm: norm(),
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
        }
    }

    /// `[b, t, heads * hd]` -> `[b, heads, t, hd]`, normed per head if the config says so.
    fn split(&self, x: Tensor<3>, heads: usize, norm: Option<&RmsNorm>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        let x = x.reshape([b, t, heads, self.head_dim]);
        let x = match norm {
            Some(n) => rms(n, x),
            None => x,
        };
        x.swap_dims(1, 2)
    }

    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<4>, Tensor<4>),
        cache: &mut LayerCache,
        bias: &Tensor<4>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let q = self.split(
            fused::linear(&self.q_proj, x.clone()),
            self.heads,
            self.q_norm.as_ref(),
        );
        let k = self.split(
            fused::linear(&self.k_proj, x.clone()),
            self.kv_heads,
            self.k_norm.as_ref(),
        );
        let v = self.split(fused::linear(&self.v_proj, x), self.kv_heads, None);
        let (q, k) = (rotate(q, rope), rotate(k, rope));
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let rep = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(k, rep), repeat_kv(v, rep));
        let scale = (self.head_dim as f64).powf(-0.5);
        let dtype = q.dtype();
        let context = if q.device().is_autodiff() || dtype != DType::F32 {
            // Scores, then the softmax in f32 whatever the compute precision
            // (transformers upcasts it), then back.
            let scores = fused::matmul(q * scale, k.swap_dims(2, 3));
            let weights =
                fused::biased_softmax(scores.cast(DType::F32), bias.clone().cast(DType::F32));
            fused::matmul(weights.cast(dtype), v)
        } else {
            let [bb, _, bq, tk] = bias.dims();
            let bias = bias
                .clone()
                .expand([bb, 1, if bq == 1 { t } else { bq }, tk]);
            let options = AttentionModuleOptions {
                scale: Some(scale),
                ..AttentionModuleOptions::default()
            };
            attention(q, k, v, None, Some(bias), options)
        };
        let context = context
            .swap_dims(1, 2)
            .reshape([b, t, self.heads * self.head_dim]);
        fused::linear(&self.o_proj, context)
    }
}

/// `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = [-x2, x1]` over
/// the two halves of each head (transformers' layout, not interleaved pairs).
fn rotate(x: Tensor<4>, (cos, sin): &(Tensor<4>, Tensor<4>)) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..d]);
    let rotated = Tensor::cat(vec![-x2, x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// Each key/value head repeated for the `rep` query heads it serves,
/// contiguously (head j serves query heads j*rep .. j*rep+rep), as HF's `repeat_kv`.
fn repeat_kv(x: Tensor<4>, rep: usize) -> Tensor<4> {
    if rep == 1 {
        return x;
    }
    let [b, h, t, d] = x.dims();
    x.reshape([b, h, 1, t, d])
        .expand([b, h, rep, t, d])
        .reshape([b, h * rep, t, d])
}

#[derive(Module, Debug)]
pub(crate) struct Mlp {
    pub gate_proj: Proj,
    pub up_proj: Proj,
    pub down_proj: Proj,
    #[module(skip)]
    pub act: Activation,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = fused::linear(&self.gate_proj, x.clone());
        let gate = match self.act {
            Activation::Silu => act::silu(gate),
            Activation::Gelu => fused::gelu(gate),
            Activation::GeluTanh => act::gelu_approximate(gate),
            Activation::Relu => act::relu(gate),
        };
        fused::linear(&self.down_proj, gate * fused::linear(&self.up_proj, x))
    }
}

#[derive(Module, Debug)]
pub(crate) struct Layer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl Layer {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<4>, Tensor<4>),
        cache: &mut LayerCache,
        bias: &Tensor<4>,
    ) -> Tensor<3> {
        let h = self
            .self_attn
            .forward(rms(&self.input_layernorm, x.clone()), rope, cache, bias);
        let x = x + h;
        let h = self
            .mlp
            .forward(rms(&self.post_attention_layernorm, x.clone()));
        x + h
    }
}

/// A decoder-only language model of the Llama family.
#[derive(Module, Debug)]
pub struct CausalLm {
    pub(crate) embed_tokens: Embedding,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    pub(crate) lm_head: Option<Proj>,
    /// The architecture, as `config.json` holds it.
    #[module(skip)]
    pub config: CausalConfig,
    #[module(skip)]
    pub(crate) rope: Rope,
    /// `generation_config.json`'s fields (EOS ids, decoding defaults).
    #[module(skip)]
    pub generation: serde_json::Map<String, serde_json::Value>,
    /// Activation checkpointing by layers when training (see `ml::recompute`).
    #[module(skip)]
    pub checkpointing: bool,
}

/// Token ids with their positions and the attention bias of one forward.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `[b, t]`.
    pub ids: Tensor<2, Int>,
    /// Each token's position in its row (`[b, t]`, on the host).
    pub positions: Vec<i64>,
    /// `[b, 1, t, past + t]`: 0 where a query may see a key, [`MASKED`] elsewhere.
    pub bias: Tensor<4>,
}

impl Inputs {
    /// Left-padded rows: pads first, positions from 0 at each row's first
    /// token (`mask.cumsum - 1`, 0 on pads), causal and padding masks.
    pub fn left_padded(rows: &[Vec<u32>], pad: u32, device: &Device) -> Inputs {
        let t = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let mut ids = Vec::with_capacity(rows.len() * t);
        for row in rows {
            ids.extend(std::iter::repeat_n(pad as i64, t - row.len()));
            ids.extend(row.iter().map(|&x| x as i64));
        }
        let starts: Vec<usize> = lens.iter().map(|&n| t - n).collect();
        Inputs::with_starts(ids, &starts, t, device)
    }

    /// `ids` (`[b, t]` row-major) whose row i starts at `starts[i]` (pads
    /// before; pads after a row's end are never seen by its real tokens).
    pub fn with_starts(ids: Vec<i64>, starts: &[usize], t: usize, device: &Device) -> Inputs {
        let b = starts.len();
        let positions = starts
            .iter()
            .flat_map(|&s| (0..t).map(move |j| j.saturating_sub(s) as i64))
            .collect();
        Inputs {
            ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            positions,
            bias: causal_bias(starts, t, 0, device),
        }
    }
}

/// `[b, 1, t, past + t]`: query j (at key index past + j) sees keys from its
/// row's first token (`starts[i]`) to itself. A query with no key to see (a
/// pad) sees only itself, so no row is fully masked.
pub(crate) fn causal_bias(starts: &[usize], t: usize, past: usize, device: &Device) -> Tensor<4> {
    let total = past + t;
    let mut v = vec![MASKED; starts.len() * t * total];
    for (i, &s) in starts.iter().enumerate() {
        for j in 0..t {
            let q = past + j;
            let row = &mut v[(i * t + j) * total..(i * t + j + 1) * total];
            for (k, x) in row.iter_mut().enumerate().take(q + 1) {
                if k >= s || k == q {
                    *x = 0.0;
                }
            }
        }
    }
    Tensor::<1>::from_data(TensorData::new(v, [starts.len() * t * total]), device).reshape([
        starts.len(),
        1,
        t,
        total,
    ])
}

impl CausalLm {
    /// A freshly initialised model (normal(0, initializer_range) weights,
    /// zero biases, unit norms), as HF's `_init_weights`.
    pub fn new(config: &CausalConfig, device: &Device) -> Result<CausalLm, String> {
        config.check()?;
        let c = config;
        let std = c.initializer_range;
        let (d, inter) = (c.hidden_size, c.intermediate_size);
        let layers = (0..c.num_hidden_layers)
            .map(|_| Layer {
                self_attn: Attention::new(c, device),
                mlp: Mlp {
                    gate_proj: linear(d, inter, c.mlp_bias, std, device),
                    up_proj: linear(d, inter, c.mlp_bias, std, device),
                    down_proj: linear(inter, d, c.mlp_bias, std, device),
                    act: c.hidden_act,
                },
                input_layernorm: rms_norm(d, c.rms_norm_eps, device),
                post_attention_layernorm: rms_norm(d, c.rms_norm_eps, device),
            })
            .collect();
        Ok(CausalLm {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            layers,
            norm: rms_norm(d, c.rms_norm_eps, device),
            lm_head: (!c.tie_word_embeddings).then(|| linear(d, c.vocab_size, false, std, device)),
            rope: Rope::new(c),
            config: c.clone(),
            generation: serde_json::Map::new(),
            checkpointing: false,
        })
    }

    /// The padding token (`pad_token_id`, else the first EOS id).
    pub fn pad(&self) -> u32 {
        self.config.token_rules(&self.generation).pad
    }

    /// Weights in the model (a tied head counted once).
    pub fn num_params(&self) -> usize {
        let c = &self.config;
        let (d, hd, inter) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let bias = |on: bool, n: usize| if on { n } else { 0 };
        let attn = d * (q + 2 * kv)
            + q * d
            + bias(c.qkv_bias, q + 2 * kv)
            + bias(c.o_bias, d)
            + bias(c.qk_norm, 2 * hd);
        let mlp = 3 * d * inter + bias(c.mlp_bias, 2 * inter + d);
        let layer = attn + mlp + 2 * d;
        let head = if c.tie_word_embeddings {
            0
        } else {
            c.vocab_size * d
        };
        c.vocab_size * d + c.num_hidden_layers * layer + d + head
    }

    /// A fresh cache, one slot per layer.
    pub fn start_cache(&self) -> Vec<LayerCache> {
        vec![None; self.layers.len()]
    }

    /// Final hidden states `[b, t, d]` of `inputs`, extending `cache`.
    pub fn hidden(&self, inputs: &Inputs, cache: &mut [LayerCache]) -> Tensor<3> {
        let [b, t] = inputs.ids.dims();
        let device = inputs.ids.device();
        let mut x = self.embed_tokens.forward(inputs.ids.clone());
        let dtype = x.dtype();
        let (cos, sin) = self.rope.tables(&inputs.positions, b, t, &device);
        let rope = (cos.cast(dtype), sin.cast(dtype));
        let bias = inputs.bias.clone().cast(dtype);
        if self.checkpointing && x.device().is_autodiff() {
            return rms(&self.norm, self.checkpointed_layers(inputs, x, rope, bias));
        }
        for (layer, c) in self.layers.iter().zip(cache.iter_mut()) {
            x = layer.forward(x, &rope, c, &bias);
        }
        rms(&self.norm, x)
    }

    /// The layers run without the graph, their inputs kept; their output is
    /// a fresh leaf and the tape replays them in the backward pass.
    fn checkpointed_layers(
        &self,
        inputs_of: &Inputs,
        embedded: Tensor<3>,
        rope: (Tensor<4>, Tensor<4>),
        bias: Tensor<4>,
    ) -> Tensor<3> {
        let mut inputs = Vec::with_capacity(self.layers.len());
        // The embeddings' graph is dropped here and rebuilt in the replay.
        let mut h = recompute::untracked(embedded);
        for layer in &self.layers {
            inputs.push(h.clone());
            h = layer.clone().no_grad().forward(h, &rope, &mut None, &bias);
        }
        let out = recompute::leaf(h);
        recompute::record(Box::new(Replayed {
            layers: self.layers.clone(),
            inputs,
            rope,
            bias,
            embed: self.embed_tokens.clone(),
            ids: inputs_of.ids.clone(),
            out: out.clone(),
        }));
        out
    }

    /// Logits `[b, t, vocab]` of hidden states, in f32 also under mixed precision.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        let v = self.config.vocab_size;
        let flat = hidden.reshape([b * t, d]);
        let out = match &self.lm_head {
            Some(head) => fused::linear(head, flat),
            None => fused::matmul(flat, self.embed_tokens.weight.val().transpose()),
        };
        to_f32(out.reshape([b, t, v]))
    }

    /// Logits of a whole batch, no cache kept.
    pub fn forward(&self, inputs: &Inputs) -> Tensor<3> {
        let mut cache = self.start_cache();
        self.logits(self.hidden(inputs, &mut cache))
    }
}

/// Layers to run again in the backward pass, with what they read.
struct Replayed {
    layers: Vec<Layer>,
    /// Each layer's input, without the graph.
    inputs: Vec<Tensor<3>>,
    rope: (Tensor<4>, Tensor<4>),
    bias: Tensor<4>,
    /// The token embedding and the ids it read (a trained embedding gets its gradient from them).
    embed: Embedding,
    ids: Tensor<2, Int>,
    /// The leaf the loss's graph starts from.
    out: Tensor<3>,
}

impl recompute::Replay for Replayed {
    fn replay(
        self: Box<Self>,
        grads: &burn::tensor::Gradients,
        collect: &mut dyn FnMut(burn::tensor::Gradients),
    ) {
        let Some(mut g) = self.out.grad(grads) else {
            return;
        };
        for (layer, input) in self.layers.iter().zip(self.inputs).rev() {
            let run = |x| layer.forward(x, &self.rope, &mut None, &self.bias);
            match recompute::replay_block(input, g, run, collect) {
                Some(next) => g = next,
                None => return,
            }
        }
        recompute::into_embeddings(self.embed.forward(self.ids), g, collect);
    }
}

impl crate::ml::lora::Projections for CausalLm {
    fn projections(&mut self) -> Vec<(String, &mut Proj)> {
        super::io::projections(self)
    }
}
