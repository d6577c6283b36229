//! ROUGE, computed exactly as Google's `rouge-score` package does
//! (`rouge_scorer.py`, the reference the field reports):
//!
//! - tokens: Python-style lowercasing, every run of characters outside
//!   `[a-z0-9]` becomes a space, split on whitespace, NLTK's Porter stemmer
//!   (NLTK_EXTENSIONS mode) on tokens longer than 3 characters when stemming;
//! - rouge1/rouge2: clipped n-gram overlap; precision over prediction n-grams,
//!   recall over target n-grams (each with a floor of 1 in the denominator);
//! - rougeL: longest common subsequence over the whole token sequences;
//! - rougeLsum: sentences split on newlines, union-LCS per target sentence,
//!   hits clipped by the remaining token counts of both sides, with
//!   `rouge-score`'s exact backtracking tie-break;
//! - F = 2PR/(P+R), 0 when P+R = 0; several references: the one with the
//!   highest F per ROUGE type (first on ties), like `score_multi`.

use std::collections::HashMap;

use nltk_porter::{Mode, PorterStemmer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
/// Precision, recall and F1 of one ROUGE type.
pub struct Score {
    /// Matched / predicted.
    pub precision: f64,
    /// Matched / reference.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub fmeasure: f64,
}

impl Score {
    fn new(precision: f64, recall: f64) -> Score {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Score {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// The four ROUGE types for one (target, prediction) pair.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RougeScores {
    /// Unigram overlap.
    pub rouge1: Score,
    /// Bigram overlap.
    pub rouge2: Score,
    #[serde(rename = "rougeL")]
    /// Longest common subsequence.
    pub rouge_l: Score,
    #[serde(rename = "rougeLsum")]
    /// LCS over sentences (newline-split), as `rougeLsum`.
    pub rouge_lsum: Score,
}

impl RougeScores {
    /// The types, as `rouge-score` names them.
    pub const TYPES: [&'static str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];

    /// The score of a type by its `rouge-score` name.
    pub fn get(&self, ty: &str) -> Option<&Score> {
        match ty {
            "rouge1" => Some(&self.rouge1),
            "rouge2" => Some(&self.rouge2),
            "rougeL" => Some(&self.rouge_l),
            "rougeLsum" => Some(&self.rouge_lsum),
            _ => None,
        }
    }

    fn get_mut(&mut self, i: usize) -> &mut Score {
        match i {
            0 => &mut self.rouge1,
            1 => &mut self.rouge2,
            2 => &mut self.rouge_l,
            _ => &mut self.rouge_lsum,
        }
    }

    fn by_index(&self, i: usize) -> Score {
        *self.get(Self::TYPES[i]).unwrap_or(&self.rouge1)
    }
}

/// How several references per prediction are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiRef {
    /// Per ROUGE type, the reference with the highest F (`score_multi`).
    Max,
    /// Mean of precision, recall and F over the references.
    Mean,
    /// The first reference only.
    First,
}

/// A ROUGE scorer (with or without stemming).
pub struct RougeScorer {
    stemmer: Option<PorterStemmer>,
}

impl RougeScorer {
    /// A scorer, with the Porter stemmer (NLTK's variant) when `use_stemmer`.
    pub fn new(use_stemmer: bool) -> RougeScorer {
        RougeScorer {
            stemmer: use_stemmer.then(|| PorterStemmer::new(Mode::Nltk)),
        }
    }

    /// `rouge_score.tokenize.tokenize`.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        let mut tokens = Vec::new();
        let mut cur = String::new();
        for c in lower.chars() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                cur.push(c);
            } else if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            tokens.push(cur);
        }
        if let Some(st) = &self.stemmer {
            for t in tokens.iter_mut() {
                if t.len() > 3 {
                    *t = st.stem(t);
                }
            }
            tokens.retain(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        }
        tokens
    }

    /// All four types for one target and one prediction.
    pub fn score(&self, target: &str, prediction: &str) -> RougeScores {
        let t = self.tokenize(target);
        let p = self.tokenize(prediction);
        let sents = |text: &str| -> Vec<Vec<String>> {
            text.split('\n')
                .filter(|s| !s.is_empty())
                .map(|s| self.tokenize(s))
                .collect()
        };
        RougeScores {
            rouge1: ngram_score(&t, &p, 1),
            rouge2: ngram_score(&t, &p, 2),
            rouge_l: lcs_score(&t, &p),
            rouge_lsum: summary_level_lcs(&sents(target), &sents(prediction)),
        }
    }

    /// Scores one prediction against several references.
    pub fn score_multi(&self, targets: &[String], prediction: &str, how: MultiRef) -> RougeScores {
        let all: Vec<RougeScores> = match how {
            MultiRef::First => targets
                .iter()
                .take(1)
                .map(|t| self.score(t, prediction))
                .collect(),
            _ => targets.iter().map(|t| self.score(t, prediction)).collect(),
        };
        if all.is_empty() {
            return RougeScores::default();
        }
        let mut out = RougeScores::default();
        for i in 0..4 {
            *out.get_mut(i) = match how {
                MultiRef::Max | MultiRef::First => {
                    let mut best = all[0].by_index(i);
                    for s in &all[1..] {
                        if s.by_index(i).fmeasure > best.fmeasure {
                            best = s.by_index(i);
                        }
                    }
                    best
                }
                MultiRef::Mean => {
                    let n = all.len() as f64;
                    Score {
                        precision: all.iter().map(|s| s.by_index(i).precision).sum::<f64>() / n,
                        recall: all.iter().map(|s| s.by_index(i).recall).sum::<f64>() / n,
                        fmeasure: all.iter().map(|s| s.by_index(i).fmeasure).sum::<f64>() / n,
                    }
                }
            };
        }
        out
    }
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

fn ngram_score(target: &[String], prediction: &[String], n: usize) -> Score {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t
        .iter()
        .map(|(g, c)| (*c).min(p.get(g).copied().unwrap_or(0)))
        .sum();
    let tc: usize = t.values().sum();
    let pc: usize = p.values().sum();
    Score::new(
        overlap as f64 / pc.max(1) as f64,
        overlap as f64 / tc.max(1) as f64,
    )
}

/// The DP table of `_lcs_table(ref, can)`, row-major (rows = ref + 1).
fn lcs_table(r: &[String], c: &[String]) -> Vec<Vec<u32>> {
    let mut t = vec![vec![0u32; c.len() + 1]; r.len() + 1];
    for i in 1..=r.len() {
        for j in 1..=c.len() {
            t[i][j] = if r[i - 1] == c[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

fn lcs_score(target: &[String], prediction: &[String]) -> Score {
    if target.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_table(target, prediction)[target.len()][prediction.len()] as f64;
    Score::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// Indices into `r` of one LCS with `c`, by `_backtrack_norec`'s tie-break.
fn lcs_indices(r: &[String], c: &[String]) -> Vec<usize> {
    let t = lcs_table(r, c);
    let (mut i, mut j) = (r.len(), c.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

fn summary_level_lcs(refs: &[Vec<String>], cands: &[Vec<String>]) -> Score {
    if refs.is_empty() || cands.is_empty() {
        return Score::default();
    }
    let m: usize = refs.iter().map(Vec::len).sum();
    let n: usize = cands.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return Score::default();
    }
    let mut cnt_r: HashMap<&str, i64> = HashMap::new();
    let mut cnt_c: HashMap<&str, i64> = HashMap::new();
    for s in refs {
        for t in s {
            *cnt_r.entry(t).or_default() += 1;
        }
    }
    for s in cands {
        for t in s {
            *cnt_c.entry(t).or_default() += 1;
        }
    }
    let mut hits = 0usize;
    for r in refs {
        let mut union: Vec<usize> = cands.iter().flat_map(|c| lcs_indices(r, c)).collect();
        union.sort_unstable();
        union.dedup();
        for idx in union {
            let tok = r[idx].as_str();
            let (cc, cr) = (
                cnt_c.get(tok).copied().unwrap_or(0),
                cnt_r.get(tok).copied().unwrap_or(0),
            );
            if cc > 0 && cr > 0 {
                hits += 1;
                cnt_c.insert(tok, cc - 1);
                cnt_r.insert(tok, cr - 1);
            }
        }
    }
    Score::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

/// Means over examples (each already combined over its references).
pub fn mean(scores: &[RougeScores]) -> RougeScores {
    let mut out = RougeScores::default();
    if scores.is_empty() {
        return out;
    }
    let n = scores.len() as f64;
    for i in 0..4 {
        let s = out.get_mut(i);
        s.precision = scores.iter().map(|x| x.by_index(i).precision).sum::<f64>() / n;
        s.recall = scores.iter().map(|x| x.by_index(i).recall).sum::<f64>() / n;
        s.fmeasure = scores.iter().map(|x| x.by_index(i).fmeasure).sum::<f64>() / n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_example() {
        // Target / prediction with stemming (jumps -> jump, lazy -> lazi), computed by hand:
        // unigram overlap 6 of 8 predicted, 9 target; bigrams 2 of 7 and 8; LCS 5.
        let s = RougeScorer::new(true).score(
            "The quick brown fox jumps over the lazy dog",
            "The quick brown dog jumps on the log.",
        );
        assert!(close(s.rouge1.precision, 6.0 / 8.0) && close(s.rouge1.recall, 6.0 / 9.0));
        assert!(close(s.rouge2.precision, 2.0 / 7.0) && close(s.rouge2.recall, 2.0 / 8.0));
        assert!(close(s.rouge_l.precision, 5.0 / 8.0) && close(s.rouge_l.recall, 5.0 / 9.0));
        assert!(close(
            s.rouge_l.fmeasure,
            2.0 * (5.0 / 8.0) * (5.0 / 9.0) / (5.0 / 8.0 + 5.0 / 9.0)
        ));
    }

    #[test]
    fn tokenizer_follows_rouge_score() {
        let r = RougeScorer::new(false);
        assert_eq!(
            r.tokenize("It's 5-star: GREAT! café"),
            ["it", "s", "5", "star", "great", "caf"]
        );
        // U+212A KELVIN SIGN lowercases to ASCII `k`.
        assert_eq!(r.tokenize("\u{212A}ELVIN"), ["kelvin"]);
        assert_eq!(
            RougeScorer::new(true).tokenize("batteries running fast"),
            ["batteri", "run", "fast"]
        );
        assert!(r.tokenize("!!! ...").is_empty());
    }

    #[test]
    fn empty_sides_score_zero() {
        let s = RougeScorer::new(true).score("", "something");
        assert_eq!(s, RougeScores::default());
    }
}
