//! Decoding shared by every model family: the settings (HF `generate`'s
//! names), the token rules a checkpoint's config implies, the logits
//! processors (bans, forced tokens, n-gram blocking), token choice on the
//! host with the project's seeded RNG (so sampled outputs are reproducible on
//! every backend), and greedy or sampled decoding over any [`Stepper`].
//! Beam search is in `beam.rs`.

use crate::rng::Rng;

/// Decoding settings (HF `generate` names in comments).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// `max_new_tokens`: tokens generated after the decoder start token, EOS included.
    pub max_new_tokens: usize,
    /// `do_sample`: false picks the most likely token.
    pub sample: bool,
    /// Divides the logits before sampling.
    pub temperature: f64,
    /// 0 keeps every token.
    pub top_k: usize,
    /// 1.0 keeps every token.
    pub top_p: f64,
    /// `no_repeat_ngram_size`; 0 is off.
    pub no_repeat_ngram: usize,
    /// `min_new_tokens`: EOS is banned before this many tokens.
    pub min_new_tokens: usize,
    /// `num_beams`; 1 is no beam search.
    pub num_beams: usize,
    /// `length_penalty`: a finished beam's score is its log-probability over
    /// its length to this power (above 0 favours longer summaries).
    pub length_penalty: f64,
    /// `early_stopping`.
    pub early_stopping: EarlyStopping,
    /// `num_return_sequences`: sequences per source. Copies share the
    /// source's encoder pass (BART) or the prompt's key/value cache.
    pub num_return_sequences: usize,
}

/// When beam search stops (HF's `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `False`: when the best running beam, at its current length, cannot
    /// beat the worst of the `num_beams` finished ones.
    #[default]
    Heuristic,
    /// `True`: as soon as `num_beams` beams have finished.
    Done,
    /// `"never"`: only when no running beam can improve even at the longest
    /// length (the canonical bound).
    Never,
}

impl GenerateOptions {
    /// Greedy decoding of at most `max_new_tokens`, as `generate()` does by default.
    pub fn greedy(max_new_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens,
            sample: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            no_repeat_ngram: 0,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            num_return_sequences: 1,
        }
    }

    /// An error for settings that cannot generate (a zero length, a non-positive temperature).
    pub fn check(&self) -> Result<(), String> {
        if self.max_new_tokens == 0 {
            return Err("max-new-tokens must be at least 1".into());
        }
        if self.sample && self.temperature <= 0.0 {
            return Err("temperature must be > 0 when sampling".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if self.num_beams == 0 {
            return Err("num-beams must be at least 1".into());
        }
        if self.num_beams > 1 && self.sample {
            return Err(
                "beam search samples nothing: set `sample #false` with `num-beams` above 1".into(),
            );
        }
        if self.num_return_sequences == 0 {
            return Err("num-return-sequences must be at least 1".into());
        }
        if self.num_return_sequences > 1 && self.num_beams > 1 {
            return Err("several sequences per source come from sampling or greedy decoding, not from beam search: set `num-beams 1`".into());
        }
        if !self.length_penalty.is_finite() {
            return Err("length-penalty must be a finite number".into());
        }
        Ok(())
    }
}

/// One generated sequence: the new tokens (EOS included when reached), and
/// whether EOS was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The generated ids (no prompt, no decoder start token).
    pub tokens: Vec<u32>,
    /// Whether it ended with EOS (else it reached the length limit).
    pub finished: bool,
}

/// What a checkpoint's config says about tokens while decoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenRules {
    /// Values per row of logits.
    pub vocab: usize,
    /// Any of these ends a sequence (`eos_token_id` may be a list).
    pub eos: Vec<u32>,
    /// Never generated (BART: padding, never a label).
    pub banned: Vec<u32>,
    /// Never generated after the first token (BART: `<s>`; generating it
    /// only stalls a weak model: `<s><s><s>...`).
    pub banned_after_first: Vec<u32>,
    /// `forced_bos_token_id`: the first token.
    pub forced_bos: Option<u32>,
    /// `forced_eos_token_id`: the token at the length limit.
    pub forced_eos: Option<u32>,
    /// Fed to rows that have finished (`pad_token_id`).
    pub pad: u32,
}

impl TokenRules {
    /// Whether `token` ends a sequence.
    pub fn is_eos(&self, token: u32) -> bool {
        self.eos.contains(&token)
    }
}

/// A batch of sequences extended one token per row and step: the seam
/// between decoding and a model family (its cache, masks and positions).
pub trait Stepper {
    /// Next-token logits, `rows * vocab` values. The first call (`last` is
    /// `None`) reads the prompt (or the decoder start token); each later one
    /// feeds every live row its `last` token.
    fn step(&mut self, last: Option<&[u32]>) -> Vec<f32>;
    /// Keeps rows `index` of the state, in this order. `dropped` says rows
    /// left for good: state shared by a source's beams is only reordered then.
    fn select(&mut self, index: &[usize], dropped: bool);
}

/// Greedy or sampled decoding of `num_return_sequences` sequences per row
/// of `stepper` (copies of a row are adjacent in the output); `prefixes`
/// are what n-gram blocking sees before the new tokens (the prompt, or the
/// decoder start token).
pub fn decode(
    stepper: &mut dyn Stepper,
    prefixes: &[Vec<u32>],
    opts: &GenerateOptions,
    rules: &TokenRules,
    rng: &mut Rng,
) -> Vec<Generated> {
    let copies = opts.num_return_sequences.max(1);
    let rows: Vec<usize> = (0..prefixes.len())
        .flat_map(|i| std::iter::repeat_n(i, copies))
        .collect();
    let b = rows.len();
    let mut out: Vec<Generated> = (0..b)
        .map(|_| Generated {
            tokens: Vec::new(),
            finished: false,
        })
        .collect();
    let mut current = vec![rules.pad; b];
    let v = rules.vocab;
    for step in 0..opts.max_new_tokens {
        let mut logits = stepper.step((step > 0).then_some(&current[..]));
        if step == 0 && copies > 1 {
            // The prompts were read once; their copies share that state.
            stepper.select(&rows, true);
            logits = rows
                .iter()
                .flat_map(|&i| logits[i * v..(i + 1) * v].iter().copied())
                .collect();
        }
        for (i, g) in out.iter_mut().enumerate() {
            if g.finished {
                current[i] = rules.pad;
                continue;
            }
            let mut row = logits[i * v..(i + 1) * v].to_vec();
            let token = match forced_token(rules, step, opts) {
                Some(t) => t,
                None => {
                    ban(&mut row, &prefixes[rows[i]], &g.tokens, opts, rules);
                    choose(&mut row, opts, rng)
                }
            };
            g.tokens.push(token);
            g.finished = rules.is_eos(token);
            current[i] = token;
        }
        if out.iter().all(|g| g.finished) {
            break;
        }
    }
    out
}

/// `generate` over `sources` in chunks of `batch` rows, in order (so a
/// sampler draws from one RNG stream as if unbatched, batch by batch).
pub fn in_batches(
    sources: &[Vec<u32>],
    batch: usize,
    mut generate: impl FnMut(&[Vec<u32>]) -> Vec<Generated>,
) -> Vec<Generated> {
    sources
        .chunks(batch.max(1))
        .flat_map(&mut generate)
        .collect()
}

/// The token the config forces at `step`: `forced_bos_token_id` first,
/// `forced_eos_token_id` last.
pub(crate) fn forced_token(rules: &TokenRules, step: usize, opts: &GenerateOptions) -> Option<u32> {
    if step == 0 {
        rules.forced_bos
    } else if step + 1 == opts.max_new_tokens {
        rules.forced_eos
    } else {
        None
    }
}

/// Bans what may not come after `tokens` (the new tokens so far): the
/// rules' banned tokens, EOS before `min_new_tokens`, repeated n-grams
/// (counted over `prefix` and `tokens`, as HF's `NoRepeatNGramLogitsProcessor`
/// counts over all of `input_ids`).
pub(crate) fn ban(
    row: &mut [f32],
    prefix: &[u32],
    tokens: &[u32],
    opts: &GenerateOptions,
    rules: &TokenRules,
) {
    let step = tokens.len();
    let after_first = if step > 0 {
        &rules.banned_after_first[..]
    } else {
        &[]
    };
    for &t in rules.banned.iter().chain(after_first) {
        row[t as usize] = f32::NEG_INFINITY;
    }
    if step < opts.min_new_tokens {
        for &t in &rules.eos {
            row[t as usize] = f32::NEG_INFINITY;
        }
    }
    if opts.no_repeat_ngram > 0 {
        let mut seq = Vec::with_capacity(prefix.len() + tokens.len());
        seq.extend_from_slice(prefix);
        seq.extend_from_slice(tokens);
        block_repeats(row, &seq, opts.no_repeat_ngram);
    }
}

/// Bans tokens that would repeat an n-gram already in `seq`.
fn block_repeats(row: &mut [f32], seq: &[u32], n: usize) {
    if seq.len() + 1 < n {
        return;
    }
    let prefix = &seq[seq.len() + 1 - n..];
    for w in seq.windows(n) {
        if &w[..n - 1] == prefix {
            row[w[n - 1] as usize] = f32::NEG_INFINITY;
        }
    }
}

/// Picks a token from one row of logits.
pub fn choose(row: &mut [f32], opts: &GenerateOptions, rng: &mut Rng) -> u32 {
    if !opts.sample {
        return argmax(row);
    }
    let t = opts.temperature as f32;
    for x in row.iter_mut() {
        *x /= t;
    }
    let mut order: Vec<usize> = (0..row.len()).collect();
    // Descending by logit, ties by id: deterministic.
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    if opts.top_k > 0 && opts.top_k < order.len() {
        order.truncate(opts.top_k);
    }
    let max = row[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((row[i] - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    for p in probs.iter_mut() {
        *p /= total;
    }
    if opts.top_p < 1.0 {
        // Keep the smallest prefix whose mass reaches top_p (at least one token).
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= opts.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        for p in probs.iter_mut() {
            *p /= total;
        }
    }
    let u = rng.next_f64();
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if u < cum {
            return order[i] as u32;
        }
    }
    order[order.len() - 1] as u32
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in row.iter().enumerate() {
        if *x > row[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut row = vec![0.1, 2.0, -1.0, 2.0];
        let mut rng = Rng::new(1);
        assert_eq!(choose(&mut row, &GenerateOptions::greedy(5), &mut rng), 1);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let mut opts = GenerateOptions::greedy(5);
            opts.sample = true;
            opts.top_k = 1;
            let mut row = vec![0.5, 1.5, 1.4, -3.0];
            assert_eq!(choose(&mut row, &opts, &mut rng), 1);
            opts.top_k = 0;
            opts.top_p = 0.01;
            let mut row = vec![0.5, 1.5, 1.4, -3.0];
            assert_eq!(choose(&mut row, &opts, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_follows_the_softmax_and_top_p_cuts_the_tail() {
        // logits ln(0.5), ln(0.3), ln(0.2): probabilities 0.5/0.3/0.2.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut opts = GenerateOptions::greedy(5);
        opts.sample = true;
        let mut rng = Rng::new(11);
        let mut counts = [0usize; 3];
        let n = 20_000;
        for _ in 0..n {
            let mut row = logits.to_vec();
            counts[choose(&mut row, &opts, &mut rng) as usize] += 1;
        }
        for (c, p) in counts.iter().zip([0.5, 0.3, 0.2]) {
            assert!((*c as f64 / n as f64 - p).abs() < 0.015, "{counts:?}");
        }
        // top_p 0.75: keeps 0.5 + 0.3 (0.8 >= 0.75), renormalised to 0.625 / 0.375.
        opts.top_p = 0.75;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            let mut row = logits.to_vec();
            counts[choose(&mut row, &opts, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!(
            (counts[0] as f64 / n as f64 - 0.625).abs() < 0.015,
            "{counts:?}"
        );
    }

    #[test]
    fn ngram_blocking_bans_the_completing_token() {
        let opts = GenerateOptions {
            no_repeat_ngram: 2,
            ..GenerateOptions::greedy(5)
        };
        // Sequence (with start 2): 2 5 6 5 -> bigram (5, 6) seen, so 6 is banned after 5.
        let mut row = vec![0.0; 8];
        block_repeats(&mut row, &[2, 5, 6, 5], opts.no_repeat_ngram);
        assert_eq!(row[6], f32::NEG_INFINITY);
        assert_eq!(row.iter().filter(|x| x.is_infinite()).count(), 1);
    }
}
