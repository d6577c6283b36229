//! Beam search as `transformers` 5 does it (`GenerationMixin._beam_search`),
//! step for step, so the same model gives the same summaries token for token:
//! log-softmax first and the logits processors after it (banned tokens are
//! not renormalised); `2 * num_beams` candidates per source; a candidate
//! that ends (EOS, or the length limit) is a finished hypothesis only when it
//! ranks in the first `num_beams`, scored by its log-probability over
//! `length ** length_penalty`; running beams exclude it; `early_stopping`'s
//! three rules. Each source's beams are rows of one batch with a shared
//! key/value cache, reordered after every step; a source whose search is
//! over leaves the batch (its hypotheses can no longer change). Any model
//! family searches through its [`Stepper`]; lengths count new tokens only,
//! as HF counts them past the prompt (`decoder_prompt_len`).

use super::decoding::{
    EarlyStopping, GenerateOptions, Generated, Stepper, TokenRules, ban, forced_token,
};

/// What HF adds to a score to rule a candidate out (float32 arithmetic, as there).
const OUT: f32 = -1.0e9;

/// A sequence being searched: its new tokens, summed log-probability.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    score: f32,
}

/// One candidate continuation: its beam, token and accumulated score.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
    /// It ends here (EOS, or the length limit).
    ends: bool,
}

/// The search for one source.
struct Search {
    /// What n-gram blocking sees before the new tokens.
    prefix: Vec<u32>,
    running: Vec<Hyp>,
    /// The best `num_beams` finished hypotheses (placeholders score `OUT`).
    finished: Vec<(Hyp, bool)>,
    /// HF's `is_early_stop_heuristic_unsatisfied`.
    can_improve: bool,
    over: bool,
}

impl Search {
    fn new(k: usize, prefix: Vec<u32>) -> Search {
        // Only the first beam is live at first, so the k beams do not all pick the same token.
        let running = (0..k)
            .map(|j| Hyp {
                tokens: Vec::new(),
                score: if j == 0 { 0.0 } else { OUT },
            })
            .collect();
        let placeholder = Hyp {
            tokens: Vec::new(),
            score: OUT,
        };
        Search {
            prefix,
            running,
            finished: vec![(placeholder, false); k],
            can_improve: true,
            over: false,
        }
    }

    /// One step from the logits of this source's beams (`k * vocab`); for each
    /// new running beam, the old beam it extends (for the cache).
    fn step(
        &mut self,
        logits: &[f32],
        step: usize,
        opts: &GenerateOptions,
        rules: &TokenRules,
    ) -> Vec<usize> {
        let k = opts.num_beams;
        let v = rules.vocab;
        let cur_len = 1 + step; // HF's length past the prompt, plus one
        let max_length = 1 + opts.max_new_tokens;
        let mut scores = Vec::with_capacity(k * v);
        for (j, hyp) in self.running.iter().enumerate() {
            let mut row = log_softmax(&logits[j * v..(j + 1) * v]);
            process(&mut row, &self.prefix, &hyp.tokens, opts, rules);
            scores.extend(row.iter().map(|x| x + hyp.score));
        }
        let top: Vec<Candidate> = top_indices(&scores, 2 * k)
            .into_iter()
            .map(|i| {
                let token = (i % v) as u32;
                Candidate {
                    beam: i / v,
                    token,
                    score: scores[i],
                    ends: rules.is_eos(token) || cur_len + 1 >= max_length,
                }
            })
            .collect();
        let seqs: Vec<Vec<u32>> = top
            .iter()
            .map(|c| extended(&self.running[c.beam].tokens, c.token))
            .collect();
        let from = self.continue_running(&top, &seqs, k);
        self.keep_finished(&top, seqs, k, cur_len, opts);
        self.check_over(cur_len + 1, max_length, &top, opts);
        from
    }

    /// The best `k` candidates that do not end become the running beams.
    fn continue_running(&mut self, top: &[Candidate], seqs: &[Vec<u32>], k: usize) -> Vec<usize> {
        let alive: Vec<f32> = top
            .iter()
            .map(|c| c.score + if c.ends { OUT } else { 0.0 })
            .collect();
        let next = top_indices(&alive, k);
        self.running = next
            .iter()
            .map(|&i| Hyp {
                tokens: seqs[i].clone(),
                score: alive[i],
            })
            .collect();
        next.iter().map(|&i| top[i].beam).collect()
    }

    /// Candidates that end among the first `k` join the finished hypotheses
    /// when they beat the worst of them (and the search may still improve).
    fn keep_finished(
        &mut self,
        top: &[Candidate],
        seqs: Vec<Vec<u32>>,
        k: usize,
        cur_len: usize,
        opts: &GenerateOptions,
    ) {
        let norm = (cur_len as f64).powf(opts.length_penalty) as f32;
        let full = self.finished.iter().all(|f| f.1) && opts.early_stopping == EarlyStopping::Done;
        let mut merged: Vec<(Hyp, bool)> = std::mem::take(&mut self.finished);
        for (r, (c, tokens)) in top.iter().zip(seqs).enumerate() {
            let just_finished = c.ends && r < k;
            let mut score = c.score / norm;
            for ruled_out in [full, !self.can_improve, !just_finished] {
                if ruled_out {
                    score += OUT;
                }
            }
            merged.push((Hyp { tokens, score }, just_finished));
        }
        let scores: Vec<f32> = merged.iter().map(|m| m.0.score).collect();
        self.finished = top_indices(&scores, k)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();
    }

    /// HF's stopping rules, after the step (`cur_len` now counts its token).
    fn check_over(
        &mut self,
        cur_len: usize,
        max_length: usize,
        top: &[Candidate],
        opts: &GenerateOptions,
    ) {
        let lp = opts.length_penalty;
        let best_length = if opts.early_stopping == EarlyStopping::Never && lp > 0.0 {
            max_length - 1
        } else {
            cur_len - 1
        };
        let best_possible = self.running[0].score / (best_length as f64).powf(lp) as f32;
        let all_finished = self.finished.iter().all(|f| f.1);
        let worst = self
            .finished
            .iter()
            .map(|f| f.0.score)
            .fold(f32::INFINITY, f32::min);
        let beats = if all_finished {
            best_possible > worst
        } else {
            best_possible > OUT
        };
        self.can_improve &= beats;
        let open = !(all_finished && opts.early_stopping == EarlyStopping::Done);
        let continues = !top.iter().all(|c| c.ends);
        self.over = !(self.can_improve && open && continues);
    }

    /// The best finished hypothesis.
    fn best(&self, rules: &TokenRules) -> Generated {
        let tokens = self.finished[0].0.tokens.clone();
        let finished = tokens.last().is_some_and(|&t| rules.is_eos(t));
        Generated { tokens, finished }
    }
}

fn extended(tokens: &[u32], token: u32) -> Vec<u32> {
    let mut t = Vec::with_capacity(tokens.len() + 1);
    t.extend_from_slice(tokens);
    t.push(token);
    t
}

/// `log_softmax` of one row, in float32 as torch computes it.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
    let log_sum = sum.ln();
    row.iter().map(|x| x - max - log_sum).collect()
}

/// The logits processors of `generate` on one beam's log-probabilities:
/// the bans greedy decoding applies too, then forced BOS/EOS (every other
/// token impossible, the forced one at log-probability 0).
fn process(
    row: &mut [f32],
    prefix: &[u32],
    tokens: &[u32],
    opts: &GenerateOptions,
    rules: &TokenRules,
) {
    ban(row, prefix, tokens, opts, rules);
    if let Some(t) = forced_token(rules, tokens.len(), opts) {
        row.fill(f32::NEG_INFINITY);
        row[t as usize] = 0.0;
    }
}

/// Indices of the `n` largest values, largest first; equal values by index
/// (as `torch.topk` orders them on the CPU).
fn top_indices(values: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let by = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    let n = n.min(idx.len());
    if n < idx.len() {
        idx.select_nth_unstable_by(n, by);
        idx.truncate(n);
    }
    idx.sort_by(by);
    idx
}

/// Beam search (see the module's comment) for `prefixes.len()` sources;
/// `stepper` holds `num_beams` rows per source, source by source.
pub fn beam_search(
    stepper: &mut dyn Stepper,
    prefixes: &[Vec<u32>],
    opts: &GenerateOptions,
    rules: &TokenRules,
) -> Vec<Generated> {
    let k = opts.num_beams;
    let mut searches: Vec<Search> = prefixes.iter().map(|p| Search::new(k, p.clone())).collect();
    // The sources still searched, in the order of their rows.
    let mut live: Vec<usize> = (0..prefixes.len()).collect();
    for step in 0..opts.max_new_tokens {
        let last: Vec<u32> = live
            .iter()
            .flat_map(|&i| searches[i].running.iter())
            .map(|h| h.tokens.last().copied().unwrap_or(rules.pad))
            .collect();
        let logits = stepper.step((step > 0).then_some(&last[..]));
        let width = k * rules.vocab;
        let mut rows_next: Vec<usize> = Vec::with_capacity(last.len());
        let mut still = Vec::with_capacity(live.len());
        for (slot, &i) in live.iter().enumerate() {
            let from =
                searches[i].step(&logits[slot * width..(slot + 1) * width], step, opts, rules);
            if !searches[i].over {
                still.push(i);
                rows_next.extend(from.iter().map(|&j| slot * k + j));
            }
        }
        if still.is_empty() {
            break;
        }
        stepper.select(&rows_next, still.len() < live.len());
        live = still;
    }
    searches.iter().map(|s| s.best(rules)).collect()
}
