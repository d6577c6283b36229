//! BART as Hugging Face's `BartForConditionalGeneration` computes it:
//! learned positions offset by 2, embedding layer norm, post-layer-norm
//! blocks, q scaled by head_dim^-0.5 after its projection, the output
//! projection tied to the shared embedding, plus `final_logits_bias`.
//! Field names follow HF's parameter names so loading and saving is a
//! rename-free walk (see `io.rs`).

use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData, activation as act};

use super::config::{Activation, BartConfig, activation};
use crate::ml::fused;
use crate::ml::lora::Proj;
use crate::ml::precision::to_f32;
use crate::ml::recompute;

/// Added to attention scores at masked positions (their softmax weight underflows to 0).
const MASKED: f32 = -1e9;

/// A linear layer as HF initialises it: normal(0, std) weights, zero bias.
fn linear(d_in: usize, d_out: usize, std: f64, device: &Device) -> Proj {
    let mut l = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    Proj::from(l)
}

/// BART's layer-norm epsilon (fixed in HF's implementation).
const LAYER_NORM_EPS: f64 = 1e-5;

fn layer_norm(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d)
        .with_epsilon(LAYER_NORM_EPS)
        .init(device)
}

/// `norm(x)`, with the fused kernel where it runs (see [`fused::layer_norm`]).
fn norm(norm: &LayerNorm, x: Tensor<3>) -> Tensor<3> {
    fused::layer_norm(norm, x, LAYER_NORM_EPS)
}

#[derive(Module, Debug)]
pub(crate) struct Attention {
    pub k_proj: Proj,
    pub v_proj: Proj,
    pub q_proj: Proj,
    pub out_proj: Proj,
    pub dropout: Dropout,
    #[module(skip)]
    pub heads: usize,
}

impl Attention {
    fn new(d: usize, heads: usize, dropout: f64, std: f64, device: &Device) -> Attention {
        Attention {
            k_proj: linear(d, d, std, device),
            v_proj: linear(d, d, std, device),
            q_proj: linear(d, d, std, device),
            out_proj: linear(d, d, std, device),
            dropout: DropoutConfig::new(dropout).init(),
            heads,
        }
    }

    /// `[b, t, d]` -> `[b, heads, t, d / heads]`.
    fn split(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, d] = x.dims();
        x.reshape([b, t, self.heads, d / self.heads])
            .swap_dims(1, 2)
    }

    /// Keys and values of `x`, split into heads.
    pub fn key_values(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            self.split(fused::linear(&self.k_proj, x.clone())),
            self.split(fused::linear(&self.v_proj, x)),
        )
    }

    /// Attends from `x` to the given keys and values; `bias` is added to the
    /// scores (`[b or 1, 1, tq or 1, tk]`, 0 or [`MASKED`]).
    pub fn attend(
        &self,
        x: Tensor<3>,
        keys: Tensor<4>,
        values: Tensor<4>,
        bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let head_dim = d / self.heads;
        let training = x.device().is_autodiff();
        let q = self.split(fused::linear(&self.q_proj, x) * (head_dim as f64).powf(-0.5));
        let context = if training {
            self.attend_differentiable(q, keys, values, bias)
        } else {
            // burn's fused kernel (one pass per head, no score tensor kept)
            // where nothing needs a backward: generation, scoring, evaluation.
            let bias = bias.map(|bias| {
                let [bb, _, bq, tk] = bias.dims();
                bias.expand([bb, 1, if bq == 1 { t } else { bq }, tk])
            });
            let options = AttentionModuleOptions {
                scale: Some(1.0),
                ..AttentionModuleOptions::default()
            };
            attention(q, keys, values, None, bias, options)
        };
        fused::linear(&self.out_proj, context.swap_dims(1, 2).reshape([b, t, d]))
    }

    /// Scores, softmax (with dropout) and the weighted values as separate
    /// ops, so that autodiff keeps what the backward needs.
    fn attend_differentiable(
        &self,
        q: Tensor<4>,
        keys: Tensor<4>,
        values: Tensor<4>,
        bias: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let scores = fused::matmul(q, keys.swap_dims(2, 3));
        let weights = match bias {
            Some(bias) => fused::biased_softmax(scores, bias),
            None => fused::softmax(scores),
        };
        fused::matmul(self.dropout.forward(weights), values)
    }
}

#[derive(Module, Debug)]
pub(crate) struct FeedForward {
    pub fc1: Proj,
    pub fc2: Proj,
    pub activation_dropout: Dropout,
    #[module(skip)]
    pub activation: Activation,
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = fused::linear(&self.fc1, x);
        let h = match self.activation {
            Activation::Gelu => fused::gelu(h),
            Activation::GeluTanh => act::gelu_approximate(h),
            Activation::Relu => act::relu(h),
            Activation::Silu => act::silu(h),
        };
        fused::linear(&self.fc2, self.activation_dropout.forward(h))
    }
}

#[derive(Module, Debug)]
pub(crate) struct EncoderLayer {
    pub self_attn: Attention,
    pub self_attn_layer_norm: LayerNorm,
    pub ffn: FeedForward,
    pub final_layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl EncoderLayer {
    fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let (k, v) = self.self_attn.key_values(x.clone());
        let h = self.self_attn.attend(x.clone(), k, v, Some(key_bias));
        let x = norm(&self.self_attn_layer_norm, x + self.dropout.forward(h));
        let h = self.ffn.forward(x.clone());
        norm(&self.final_layer_norm, x + self.dropout.forward(h))
    }
}

#[derive(Module, Debug)]
pub(crate) struct DecoderLayer {
    pub self_attn: Attention,
    pub self_attn_layer_norm: LayerNorm,
    pub encoder_attn: Attention,
    pub encoder_attn_layer_norm: LayerNorm,
    pub ffn: FeedForward,
    pub final_layer_norm: LayerNorm,
    pub dropout: Dropout,
}

/// Per decoder layer: the encoder's keys and values (computed once) and the
/// decoder's own keys and values so far.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// The encoder's keys and values, computed once per source.
    pub cross: (Tensor<4>, Tensor<4>),
    /// The decoder's own keys and values so far.
    pub own: Option<(Tensor<4>, Tensor<4>)>,
}

impl DecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        cache: &mut LayerCache,
        self_bias: Option<Tensor<4>>,
        cross_bias: Tensor<4>,
    ) -> Tensor<3> {
        let (k, v) = self.self_attn.key_values(x.clone());
        let (k, v) = match cache.own.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        cache.own = Some((k.clone(), v.clone()));
        let h = self.self_attn.attend(x.clone(), k, v, self_bias);
        let x = norm(&self.self_attn_layer_norm, x + self.dropout.forward(h));
        let (ck, cv) = cache.cross.clone();
        let h = self
            .encoder_attn
            .attend(x.clone(), ck, cv, Some(cross_bias));
        let x = norm(&self.encoder_attn_layer_norm, x + self.dropout.forward(h));
        let h = self.ffn.forward(x.clone());
        norm(&self.final_layer_norm, x + self.dropout.forward(h))
    }
}

#[derive(Module, Debug)]
pub(crate) struct Stack<L: Module> {
    pub embed_positions: Embedding,
    pub layernorm_embedding: LayerNorm,
    pub layers: Vec<L>,
    pub dropout: Dropout,
}

/// The model; `shared` is the token embedding of both stacks and the output projection.
#[derive(Module, Debug)]
pub struct Bart {
    pub(crate) shared: Embedding,
    pub(crate) encoder: Stack<EncoderLayer>,
    pub(crate) decoder: Stack<DecoderLayer>,
    /// A buffer in HF (never trained): detached in `logits`.
    pub(crate) final_logits_bias: Param<Tensor<1>>,
    /// The architecture, as `config.json` holds it.
    #[module(skip)]
    pub config: BartConfig,
    /// Activation checkpointing by layers when training (see `ml::recompute`).
    #[module(skip)]
    pub checkpointing: bool,
}

/// A batch of token sequences, right-padded: ids `[b, t]` and a float mask (1 = token).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[b, t]`.
    pub ids: Tensor<2, Int>,
    /// 1 where a token is, 0 on padding.
    pub mask: Tensor<2>,
}

impl Batch {
    /// Pads `rows` with `pad` to the longest row.
    pub fn new(rows: &[Vec<u32>], pad: u32, device: &Device) -> Batch {
        let b = rows.len();
        let t = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for row in rows {
            for j in 0..t {
                ids.push(row.get(j).copied().unwrap_or(pad) as i64);
                mask.push(if j < row.len() { 1.0f32 } else { 0.0 });
            }
        }
        Batch {
            ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        }
    }

    /// `[b, 1, 1, t]`: 0 where a key is a token, [`MASKED`] where it is padding.
    pub fn key_bias(&self) -> Tensor<4> {
        let [b, t] = self.mask.dims();
        ((self.mask.clone() - 1.0) * (-MASKED)).reshape([b, 1, 1, t])
    }
}

/// `heads` (`[b, h, t, dh]`, a transposed view of the projection) copied
/// into row-major order. The fused attention kernel needs row-major keys
/// and values and copies a view on every call: for the cross-attention
/// cache, read at every generated token, that copy was 41% of generation.
/// burn has no explicit "contiguous"; a reshape the view cannot express
/// (merging `t` and `dh`) is one.
fn row_major(heads: Tensor<4>) -> Tensor<4> {
    let [b, h, t, dh] = heads.dims();
    heads.reshape([b, h, t * dh]).reshape([b, h, t, dh])
}

/// `[1, 1, t, t]`: masks keys after each query (the decoder's causal mask).
pub fn causal_bias(t: usize, device: &Device) -> Tensor<4> {
    let mut v = vec![0.0f32; t * t];
    for i in 0..t {
        for j in (i + 1)..t {
            v[i * t + j] = MASKED;
        }
    }
    Tensor::<2>::from_data(TensorData::new(v, [t, t]), device).reshape([1, 1, t, t])
}

impl Bart {
    /// A freshly initialised model, initialised as HF's `_init_weights` does
    /// (normal(0, init_std) weights, zero biases, the padding row zero).
    pub fn new(config: &BartConfig, device: &Device) -> Result<Bart, String> {
        config.check()?;
        let c = config;
        let d = c.d_model;
        let std = c.init_std;
        let init = Initializer::Normal { mean: 0.0, std };
        let act = activation(&c.activation_function)?;
        let drop = |p: f64| DropoutConfig::new(p).init();
        let ffn = |dim: usize| FeedForward {
            fc1: linear(d, dim, std, device),
            fc2: linear(dim, d, std, device),
            activation_dropout: drop(c.activation_dropout),
            activation: act,
        };
        let positions = || {
            EmbeddingConfig::new(c.max_position_embeddings + 2, d)
                .with_initializer(init.clone())
                .init(device)
        };
        let mut shared = EmbeddingConfig::new(c.vocab_size, d)
            .with_initializer(init.clone())
            .init(device);
        // Zero the padding row, as nn.Embedding(padding_idx=pad) does.
        let pad = c.pad_token_id as usize;
        let w = shared.weight.val();
        let w = w.slice_assign([pad..pad + 1, 0..d], Tensor::zeros([1, d], device));
        // Detached: a leaf, so it can be tracked when built on an autodiff device.
        shared.weight = Param::from_tensor(w.detach());
        Ok(Bart {
            shared,
            encoder: Stack {
                embed_positions: positions(),
                layernorm_embedding: layer_norm(d, device),
                layers: (0..c.encoder_layers)
                    .map(|_| EncoderLayer {
                        self_attn: Attention::new(
                            d,
                            c.encoder_attention_heads,
                            c.attention_dropout,
                            std,
                            device,
                        ),
                        self_attn_layer_norm: layer_norm(d, device),
                        ffn: ffn(c.encoder_ffn_dim),
                        final_layer_norm: layer_norm(d, device),
                        dropout: drop(c.dropout),
                    })
                    .collect(),
                dropout: drop(c.dropout),
            },
            decoder: Stack {
                embed_positions: positions(),
                layernorm_embedding: layer_norm(d, device),
                layers: (0..c.decoder_layers)
                    .map(|_| DecoderLayer {
                        self_attn: Attention::new(
                            d,
                            c.decoder_attention_heads,
                            c.attention_dropout,
                            std,
                            device,
                        ),
                        self_attn_layer_norm: layer_norm(d, device),
                        encoder_attn: Attention::new(
                            d,
                            c.decoder_attention_heads,
                            c.attention_dropout,
                            std,
                            device,
                        ),
                        encoder_attn_layer_norm: layer_norm(d, device),
                        ffn: ffn(c.decoder_ffn_dim),
                        final_layer_norm: layer_norm(d, device),
                        dropout: drop(c.dropout),
                    })
                    .collect(),
                dropout: drop(c.dropout),
            },
            final_logits_bias: Param::from_tensor(Tensor::zeros([c.vocab_size], device)),
            config: c.clone(),
            checkpointing: false,
        })
    }

    /// Sets every dropout probability (PPO and exact comparisons train without dropout).
    pub fn set_dropout(&mut self, p: f64) {
        let d = || DropoutConfig::new(p).init();
        self.config.dropout = p;
        self.config.attention_dropout = p.min(self.config.attention_dropout);
        self.config.activation_dropout = p.min(self.config.activation_dropout);
        let (attn, act) = (
            self.config.attention_dropout,
            self.config.activation_dropout,
        );
        let ad = || DropoutConfig::new(attn).init();
        let fd = || DropoutConfig::new(act).init();
        self.encoder.dropout = d();
        self.decoder.dropout = d();
        for l in &mut self.encoder.layers {
            l.dropout = d();
            l.self_attn.dropout = ad();
            l.ffn.activation_dropout = fd();
        }
        for l in &mut self.decoder.layers {
            l.dropout = d();
            l.self_attn.dropout = ad();
            l.encoder_attn.dropout = ad();
            l.ffn.activation_dropout = fd();
        }
    }

    fn embed_scale(&self) -> f64 {
        if self.config.scale_embedding {
            (self.config.d_model as f64).sqrt()
        } else {
            1.0
        }
    }

    /// Token plus position embeddings (positions start at `past`), normalised.
    fn embed<L: Module>(&self, stack: &Stack<L>, ids: Tensor<2, Int>, past: usize) -> Tensor<3> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let tokens = self.shared.forward(ids) * self.embed_scale();
        // HF's BartLearnedPositionalEmbedding: position p reads row p + 2.
        let pos = Tensor::<1, Int>::arange((past as i64 + 2)..((past + t) as i64 + 2), &device)
            .reshape([1, t]);
        let x = tokens + stack.embed_positions.forward(pos);
        stack.dropout.forward(norm(&stack.layernorm_embedding, x))
    }

    /// The encoder's last hidden states `[b, t, d]`.
    pub fn encode(&self, source: &Batch) -> Tensor<3> {
        let mut x = self.embed(&self.encoder, source.ids.clone(), 0);
        // Masks are built in f32: cast once per stack (a no-op under f32).
        let bias = source.key_bias().cast(x.dtype());
        for layer in &self.encoder.layers {
            x = layer.forward(x, bias.clone());
        }
        x
    }

    /// A fresh decoder cache holding each layer's keys and values of `encoded`.
    pub fn start_cache(&self, encoded: &Tensor<3>) -> Vec<LayerCache> {
        self.decoder
            .layers
            .iter()
            .map(|l| {
                let (k, v) = l.encoder_attn.key_values(encoded.clone());
                LayerCache {
                    cross: (row_major(k), row_major(v)),
                    own: None,
                }
            })
            .collect()
    }

    /// Decoder hidden states for `ids` (positions from `past`), extending `cache`.
    /// With more than one new token the causal mask applies among them.
    pub fn decode(
        &self,
        ids: Tensor<2, Int>,
        past: usize,
        cache: &mut [LayerCache],
        source_bias: &Tensor<4>,
    ) -> Tensor<3> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let self_bias = if t > 1 {
            let causal = causal_bias(t, &device);
            Some(if past > 0 {
                Tensor::cat(vec![Tensor::zeros([1, 1, t, past], &device), causal], 3)
            } else {
                causal
            })
        } else {
            None
        };
        let mut x = self.embed(&self.decoder, ids, past);
        // Masks are built in f32: cast once per stack (a no-op under f32).
        let self_bias = self_bias.map(|bias| bias.cast(x.dtype()));
        let source_bias = source_bias.clone().cast(x.dtype());
        for (layer, c) in self.decoder.layers.iter().zip(cache.iter_mut()) {
            x = layer.forward(x, c, self_bias.clone(), source_bias.clone());
        }
        x
    }

    /// Logits `[b, t, vocab]` of decoder states: the tied projection plus
    /// `final_logits_bias`, in f32 also under mixed precision (the
    /// log-softmax over the vocabulary and the losses need its range and
    /// resolution, as under `torch.autocast`).
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        let w = self.shared.weight.val();
        let v = self.config.vocab_size;
        let bias = self.final_logits_bias.val().detach();
        to_f32(fused::affine(hidden.reshape([b * t, d]), w.transpose(), bias).reshape([b, t, v]))
    }

    /// Teacher-forced decoder states for `decoder_input` (already shifted right).
    pub fn forward_hidden(&self, source: &Batch, decoder_input: Tensor<2, Int>) -> Tensor<3> {
        if self.checkpointing && source.ids.device().is_autodiff() {
            return self.checkpointed(source, decoder_input);
        }
        let encoded = self.encode(source);
        let mut cache = self.start_cache(&encoded);
        self.decode(decoder_input, 0, &mut cache, &source.key_bias())
    }

    /// Teacher-forced logits.
    pub fn forward(&self, source: &Batch, decoder_input: Tensor<2, Int>) -> Tensor<3> {
        self.logits(self.forward_hidden(source, decoder_input))
    }
}

/// Targets prepared for teacher forcing: decoder inputs (`decoder_start`
/// then the target shifted right), labels, and a float mask of real labels.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `<eos> <s> ...`: the labels shifted right, as the decoder reads them.
    pub decoder_input: Tensor<2, Int>,
    /// The tokens to predict, padded.
    pub labels: Tensor<2, Int>,
    /// 1 where a label counts, 0 on padding.
    pub mask: Tensor<2>,
}

impl Targets {
    /// `targets` should end with EOS; rows are right-padded with `pad`.
    pub fn new(targets: &[Vec<u32>], config: &BartConfig, device: &Device) -> Targets {
        let shifted: Vec<Vec<u32>> = targets
            .iter()
            .map(|t| {
                let mut s = vec![config.decoder_start_token_id];
                s.extend(t.iter().take(t.len().saturating_sub(1)));
                s
            })
            .collect();
        let labels = Batch::new(targets, config.pad_token_id, device);
        let inputs = Batch::new(&shifted, config.pad_token_id, device);
        Targets {
            decoder_input: inputs.ids,
            labels: labels.ids,
            mask: labels.mask,
        }
    }
}

/// Log-probabilities `[b, t]` of `labels` under `logits` divided by `temperature`.
pub fn label_logprobs(logits: Tensor<3>, labels: Tensor<2, Int>, temperature: f64) -> Tensor<2> {
    fused::label_logprobs(logits, labels, temperature)
}

/// [`label_logprobs`] and the entropy of each position's distribution
/// (`-Σ p log p`, same temperature). The entropy is a statistic: it
/// carries no gradient.
pub fn label_logprobs_and_entropy(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    temperature: f64,
) -> (Tensor<2>, Tensor<2>) {
    let [b, t, _] = logits.dims();
    let lsm = act::log_softmax(logits.clone().detach() / temperature, 2);
    let entropy = -(lsm.clone().exp() * lsm).sum_dim(2).reshape([b, t]);
    (label_logprobs(logits, labels, temperature), entropy)
}

/// Mean token cross-entropy over the masked labels, and the token count.
pub fn cross_entropy(logits: Tensor<3>, targets: &Targets) -> Tensor<1> {
    let lp = label_logprobs(logits, targets.labels.clone(), 1.0);
    let n = targets.mask.clone().sum().clamp_min(1.0);
    -(lp * targets.mask.clone()).sum() / n
}

/// A scalar value per decoder position (PPO's critic), TRL's `v_head.summary`.
#[derive(Module, Debug)]
pub struct ValueHead {
    /// Decoder state -> value (`v_head.summary` in TRL).
    pub summary: Linear,
}

impl ValueHead {
    /// Zero-initialised, so the first values are 0 (as lm-human-preferences does).
    pub fn new(d_model: usize, device: &Device) -> ValueHead {
        ValueHead {
            summary: LinearConfig::new(d_model, 1)
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }

    /// `[b, t, d]` -> `[b, t]`, in f32 also under mixed precision.
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, _] = hidden.dims();
        to_f32(self.summary.forward(hidden).reshape([b, t]))
    }
}

/// What the teacher-forced pass of a checkpointed BART reads.
struct Pass {
    source_bias: Tensor<4>,
    self_bias: Tensor<4>,
    /// Seeds each layer's dropout, in the first run and the replay alike.
    seed: u64,
    /// The block numbers that seed the encoder's and the decoder's embeddings.
    embeds: [usize; 2],
}

impl Bart {
    /// [`Bart::forward_hidden`] with the layers run outside the graph and
    /// replayed in the backward pass (see `ml::recompute`).
    fn checkpointed(&self, source: &Batch, decoder_input: Tensor<2, Int>) -> Tensor<3> {
        let device = source.ids.device();
        let seed = recompute::pass_seed(&device);
        // The embeddings are seeded as the blocks after the layers.
        let layers = self.encoder.layers.len() + self.decoder.layers.len();
        let embeds = [layers, layers + 1];
        recompute::seed_block(&device, seed, embeds[0]);
        let enc_embedded = self.embed(&self.encoder, source.ids.clone(), 0);
        let dtype = enc_embedded.dtype();
        let t = decoder_input.dims()[1];
        let pass = Pass {
            source_bias: source.key_bias().cast(dtype),
            self_bias: causal_bias(t, &device).cast(dtype),
            seed,
            embeds,
        };
        let mut enc_inputs = Vec::with_capacity(self.encoder.layers.len());
        // The embeddings' graph is dropped here and rebuilt in the replay.
        let mut h = recompute::untracked(enc_embedded);
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            enc_inputs.push(h.clone());
            recompute::seed_block(&device, pass.seed, i);
            h = layer.clone().no_grad().forward(h, pass.source_bias.clone());
        }
        let encoded = h;
        recompute::seed_block(&device, pass.seed, pass.embeds[1]);
        let dec_embedded = self.embed(&self.decoder, decoder_input.clone(), 0);
        let mut dec_inputs = Vec::with_capacity(self.decoder.layers.len());
        let mut h = recompute::untracked(dec_embedded);
        let offset = self.encoder.layers.len();
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            dec_inputs.push(h.clone());
            recompute::seed_block(&device, pass.seed, offset + i);
            h = decoder_step(&layer.clone().no_grad(), h, encoded.clone(), &pass);
        }
        let out = recompute::leaf(h);
        recompute::record(Box::new(Replayed {
            model: self.clone(),
            ids: [source.ids.clone(), decoder_input],
            enc_inputs,
            dec_inputs,
            encoded,
            pass,
            device,
            out: out.clone(),
        }));
        out
    }
}

/// One decoder layer over the whole target, reading `encoded`.
fn decoder_step(layer: &DecoderLayer, x: Tensor<3>, encoded: Tensor<3>, pass: &Pass) -> Tensor<3> {
    let (k, v) = layer.encoder_attn.key_values(encoded);
    let mut cache = LayerCache {
        cross: (k, v),
        own: None,
    };
    layer.forward(
        x,
        &mut cache,
        Some(pass.self_bias.clone()),
        pass.source_bias.clone(),
    )
}

/// Layers to run again in the backward pass, with what they read.
struct Replayed {
    /// The model (its tensors shared, not copied).
    model: Bart,
    /// The source's and the decoder input's ids.
    ids: [Tensor<2, Int>; 2],
    enc_inputs: Vec<Tensor<3>>,
    dec_inputs: Vec<Tensor<3>>,
    /// The encoder's output, outside the graph.
    encoded: Tensor<3>,
    pass: Pass,
    device: Device,
    out: Tensor<3>,
}

impl Replayed {
    /// Backpropagates `g` into stack `which`'s embeddings, rebuilt with
    /// their graph, when they train.
    fn backprop_embeddings(
        &self,
        which: usize,
        g: Tensor<3>,
        collect: &mut dyn FnMut(burn::tensor::Gradients),
    ) {
        recompute::seed_block(&self.device, self.pass.seed, self.pass.embeds[which]);
        let ids = self.ids[which].clone();
        let embedded = match which {
            0 => self.model.embed(&self.model.encoder, ids, 0),
            _ => self.model.embed(&self.model.decoder, ids, 0),
        };
        recompute::into_embeddings(embedded, g, collect);
    }
}

impl recompute::Replay for Replayed {
    fn replay(
        mut self: Box<Self>,
        grads: &burn::tensor::Gradients,
        collect: &mut dyn FnMut(burn::tensor::Gradients),
    ) {
        let Some(mut g) = self.out.grad(grads) else {
            return;
        };
        let (dec_inputs, enc_inputs) = (
            std::mem::take(&mut self.dec_inputs),
            std::mem::take(&mut self.enc_inputs),
        );
        let (pass, offset) = (&self.pass, self.model.encoder.layers.len());
        let mut g_encoded: Option<Tensor<3>> = None;
        for (i, (layer, input)) in self
            .model
            .decoder
            .layers
            .iter()
            .zip(dec_inputs)
            .enumerate()
            .rev()
        {
            let (x, enc) = (
                recompute::leaf(input),
                recompute::leaf(self.encoded.clone()),
            );
            recompute::seed_block(&self.device, pass.seed, offset + i);
            let y = decoder_step(layer, x.clone(), enc.clone(), pass);
            let layer_grads = (y * recompute::untracked(g.clone())).sum().backward();
            let (Some(gx), Some(ge)) = (x.grad(&layer_grads), enc.grad(&layer_grads)) else {
                return collect(layer_grads);
            };
            g = gx;
            g_encoded = Some(match g_encoded {
                Some(sum) => sum + ge,
                None => ge,
            });
            collect(layer_grads);
        }
        self.backprop_embeddings(1, g, collect);
        let Some(mut g) = g_encoded else { return };
        for (i, (layer, input)) in self
            .model
            .encoder
            .layers
            .iter()
            .zip(enc_inputs)
            .enumerate()
            .rev()
        {
            recompute::seed_block(&self.device, pass.seed, i);
            let run = |x| layer.forward(x, pass.source_bias.clone());
            match recompute::replay_block(input, g, run, collect) {
                Some(next) => g = next,
                None => return,
            }
        }
        self.backprop_embeddings(0, g, collect);
    }
}

impl crate::ml::lora::Projections for Bart {
    fn projections(&mut self) -> Vec<(String, &mut Proj)> {
        super::io::projections(self)
    }
}
