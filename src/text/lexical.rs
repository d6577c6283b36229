//! Deterministic, lexical estimates of the seven domain-knowledge scores of
//! a (reviews, summary) pair, each on 0..5 (5 = best), from the definitions
//! in the paper:
//!
//! - aspects: content words (Porter stems, no stopwords or sentiment words)
//!   that at least two reviews (and 10% of them) mention, weighted by how many;
//! - opinions: for each aspect mention, the VADER lexicon's valence of the
//!   words around it (4 on each side), flipped after a negation (`not`,
//!   `never`, `n't`, ...) in the 3 words before it;
//! - aspect-coverage: weighted share of the reviews' aspects the summary names;
//! - opinion-faithfulness: share of the summary's aspect opinions whose sign
//!   matches the reviews' majority on that aspect;
//! - opinion-coverage: share of the reviews' (aspect, polarity) pairs, voiced by
//!   at least two reviews, that the summary voices too;
//! - conciseness: penalties for repeated sentences and trigrams, and for a
//!   length outside 100..160 words (too short costs more);
//! - relevance: share of the summary's content words found in the reviews;
//! - hallucination: 5 minus penalties for content words and numbers that no
//!   review contains;
//! - language-correctness: sentences that start with a capital and end with
//!   punctuation, no word doubled in a row, sensible sentence lengths.
//!
//! A [`ReviewProfile`] is computed once per product and reused for each summary.

use std::collections::{HashMap, HashSet};

use nltk_porter::{Mode, PorterStemmer};
use unicase::UniCase;

/// The stopwords ignored as aspects and content (English function words and
/// review boilerplate), written for this project.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "let",
    "like",
    "made",
    "make",
    "many",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "out",
    "over",
    "own",
    "really",
    "same",
    "she",
    "should",
    "since",
    "so",
    "some",
    "still",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "though",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "use",
    "used",
    "using",
    "very",
    "was",
    "we",
    "well",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "product",
    "item",
    "buy",
    "bought",
    "purchase",
    "purchased",
    "order",
    "ordered",
    "amazon",
    "review",
    "reviews",
    "reviewer",
    "reviewers",
    "customer",
    "customers",
    "user",
    "users",
    "overall",
    "however",
    "although",
    "several",
    "many",
    "some",
    "others",
    "say",
    "says",
    "said",
    "find",
    "found",
    "seem",
    "seems",
    "seemed",
    "way",
    "lot",
    "lots",
    "time",
    "times",
    "year",
    "years",
    "day",
    "days",
    "two",
    "three",
    "first",
    "back",
    "another",
    "going",
    "go",
    "went",
    "want",
    "wanted",
    "need",
    "needed",
    "think",
    "thought",
    "know",
    "see",
    "look",
    "looks",
    "looked",
    "work",
    "works",
    "worked",
    "working",
    "come",
    "comes",
    "came",
    "take",
    "took",
    "put",
    "give",
    "gave",
    "try",
    "tried",
    "keep",
    "kept",
    "well",
    "always",
    "never",
    "sure",
    "quite",
    "pretty",
    "bit",
    "little",
    "enough",
    "anything",
    "something",
    "everything",
    "nothing",
    "able",
    "s",
    "t",
    "don",
    "didn",
    "doesn",
    "isn",
    "wasn",
    "won",
    "ll",
    "ve",
    "re",
    "d",
    "m",
];

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "hardly",
    "barely", "cannot",
];

/// Words of a summary speaking as a reviewer.
const FIRST_PERSON: &[&str] = &[
    "i", "i'm", "i've", "i'd", "i'll", "me", "my", "mine", "myself", "we", "we're", "we've", "us",
    "our", "ours",
];

/// Words that attribute opinions to the reviewers.
const REVIEWER_WORDS: &[&str] = &[
    "customers",
    "customer",
    "users",
    "user",
    "reviewers",
    "reviewer",
    "buyers",
    "buyer",
    "purchasers",
    "owners",
    "people",
    "consumers",
    "shoppers",
    "many",
    "some",
    "others",
];

/// Words split on anything but letters, digits and apostrophes; lowercased.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Sentences split after `.`, `!`, `?` or a newline.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?' | '\n') {
            let s = text[start..i + c.len_utf8()].trim();
            if s.chars().any(char::is_alphanumeric) {
                out.push(s);
            }
            start = i + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if rest.chars().any(char::is_alphanumeric) {
        out.push(rest);
    }
    out
}

fn is_negation(w: &str) -> bool {
    NEGATIONS.contains(&w) || w.ends_with("n't")
}

/// The shared analyzer: stopwords, stemmer, and the VADER valence lexicon.
pub struct Lexical {
    stop: HashSet<&'static str>,
    stemmer: PorterStemmer,
    /// Stems seen so far: stemming is most of the cost, and review vocabularies repeat.
    stems: std::cell::RefCell<HashMap<String, String>>,
}

impl Default for Lexical {
    fn default() -> Lexical {
        Lexical::new()
    }
}

/// A word in context: its stem, whether it is a content word, its valence.
struct Token {
    stem: String,
    content: bool,
    valence: f64,
    negation: bool,
    number: bool,
    first_person: bool,
    names_reviewers: bool,
}

#[derive(Debug, Clone)]
/// An aspect the reviews recur on.
pub struct Aspect {
    /// Its stem.
    pub stem: String,
    /// Share of reviews that mention it.
    pub weight: f64,
    /// Reviews with a positive opinion on it.
    pub positive: u32,
    /// Reviews with a negative one.
    pub negative: u32,
}

/// The scores of one summary and the statistics behind them.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The seven scores, in [`DOMAIN_KEYS`](crate::stages::formats::dataset::DOMAIN_KEYS) order.
    pub scores: [f64; 7],
    /// Weighted share of the reviews' aspects the summary names.
    pub coverage: f64,
    /// Share of the summary's content words found in the reviews.
    pub support: f64,
    /// Words in the summary.
    pub words: usize,
    /// Sentences in the summary.
    pub sentences: usize,
    /// Numbers the reviews do not have.
    pub unsupported_numbers: usize,
    /// Aspect opinions the summary states, and how many agree with the reviews.
    pub opinions: usize,
    /// Opinions agreeing with the reviews' majority.
    pub agreeing: usize,
    /// Share of repeated trigrams.
    pub repeated_trigrams: f64,
    /// Share of words in the first person (`I`, `my`, `we`...): a summary
    /// that speaks as a reviewer reports experiences no review states.
    pub first_person: f64,
    /// Whether the summary attributes opinions to the reviewers ("customers say").
    pub attributed: bool,
}

/// What the reviews of one product say, computed once per product.
#[derive(Debug, Clone)]
pub struct ReviewProfile {
    /// The aspects, most frequent first.
    pub aspects: Vec<Aspect>,
    /// Stems of every content word in the reviews.
    pub vocabulary: HashSet<String>,
    /// Numbers that occur in the reviews.
    pub numbers: HashSet<String>,
}

fn valence(w: &str) -> f64 {
    vader_sentiment::LEXICON
        .get(&UniCase::new(w))
        .copied()
        .unwrap_or(0.0)
}

impl Lexical {
    /// The extractors, with the VADER lexicon and the stemmer loaded.
    pub fn new() -> Lexical {
        Lexical {
            stop: STOPWORDS.iter().copied().collect(),
            stemmer: PorterStemmer::new(Mode::Nltk),
            stems: Default::default(),
        }
    }

    fn tokens(&self, text: &str) -> Vec<Token> {
        words(text)
            .into_iter()
            .map(|w| {
                let v = valence(&w);
                let number = w.chars().all(|c| c.is_ascii_digit());
                let content = !number
                    && v == 0.0
                    && w.len() > 2
                    && !self.stop.contains(w.as_str())
                    && w.chars().all(char::is_alphabetic);
                let stem = self
                    .stems
                    .borrow_mut()
                    .entry(w.clone())
                    .or_insert_with(|| self.stemmer.stem(&w))
                    .clone();
                Token {
                    stem,
                    content,
                    valence: v,
                    negation: is_negation(&w),
                    number,
                    first_person: FIRST_PERSON.contains(&w.as_str()),
                    names_reviewers: REVIEWER_WORDS.contains(&w.as_str()),
                }
            })
            .collect()
    }

    /// The opinion (sum of valences) around position `i`, negation-aware.
    fn opinion_at(tokens: &[Token], i: usize) -> f64 {
        let lo = i.saturating_sub(4);
        let hi = (i + 5).min(tokens.len());
        let mut total = 0.0;
        for j in lo..hi {
            if tokens[j].valence != 0.0 {
                let negated = (j.saturating_sub(3)..j).any(|k| tokens[k].negation);
                total += if negated {
                    -0.74 * tokens[j].valence
                } else {
                    tokens[j].valence
                };
            }
        }
        total
    }

    /// What a product's reviews say, built once per product.
    pub fn profile(&self, reviews: &[String]) -> ReviewProfile {
        let mut df: HashMap<String, u32> = HashMap::new();
        let mut pos: HashMap<String, u32> = HashMap::new();
        let mut neg: HashMap<String, u32> = HashMap::new();
        let mut vocabulary = HashSet::new();
        let mut numbers = HashSet::new();
        for r in reviews {
            let toks = self.tokens(r);
            let mut seen = HashSet::new();
            let mut voiced: HashMap<&str, (bool, bool)> = HashMap::new();
            for (i, t) in toks.iter().enumerate() {
                if t.number {
                    numbers.insert(t.stem.clone());
                }
                if !t.content {
                    continue;
                }
                vocabulary.insert(t.stem.clone());
                seen.insert(t.stem.clone());
                let o = Self::opinion_at(&toks, i);
                let e = voiced.entry(t.stem.as_str()).or_default();
                e.0 |= o > 0.5;
                e.1 |= o < -0.5;
            }
            for s in seen {
                *df.entry(s).or_default() += 1;
            }
            for (s, (p, n)) in voiced {
                if p {
                    *pos.entry(s.to_string()).or_default() += 1;
                }
                if n {
                    *neg.entry(s.to_string()).or_default() += 1;
                }
            }
        }
        let n = reviews.len().max(1) as f64;
        let min_df = 2.max((0.1 * n).ceil() as u32);
        let mut aspects: Vec<Aspect> = df
            .into_iter()
            .filter(|(_, c)| *c >= min_df)
            .map(|(stem, c)| Aspect {
                positive: pos.get(&stem).copied().unwrap_or(0),
                negative: neg.get(&stem).copied().unwrap_or(0),
                stem,
                weight: c as f64 / n,
            })
            .collect();
        aspects.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.stem.cmp(&b.stem)));
        aspects.truncate(20);
        ReviewProfile {
            aspects,
            vocabulary,
            numbers,
        }
    }

    /// The seven scores, in the order of `DOMAIN_KEYS`.
    pub fn score(&self, profile: &ReviewProfile, summary: &str) -> [f64; 7] {
        self.analyze(profile, summary).scores
    }

    /// The seven scores and the statistics they are made of.
    pub fn analyze(&self, profile: &ReviewProfile, summary: &str) -> Analysis {
        let toks = self.tokens(summary);
        let n_words = toks.len();
        let m = mentions(profile, &toks);
        let cov = coverage_scores(profile, &m);
        let sents = sentences(summary);
        let (conciseness, repeated_tri) = conciseness(&toks, &sents, cov.coverage);
        let support = if m.content > 0 {
            m.supported as f64 / m.content as f64
        } else {
            0.0
        };
        let voice = voice_scores(&toks, support, m.unsupported_numbers);
        let lang = language_score(summary, &sents);
        Analysis {
            scores: [
                cov.aspect_coverage,
                cov.faithfulness,
                cov.opinion_coverage,
                conciseness,
                voice.relevance,
                voice.hallucination,
                lang,
            ]
            .map(|x| (x * 100.0).round() / 100.0),
            coverage: cov.coverage,
            support,
            words: n_words,
            sentences: sents.len(),
            unsupported_numbers: m.unsupported_numbers,
            opinions: m.opinions as usize,
            agreeing: m.agree as usize,
            repeated_trigrams: repeated_tri,
            first_person: voice.first_person,
            attributed: voice.attributed,
        }
    }
}

/// What a summary's tokens say of the reviews' aspects.
struct Mentions {
    /// Per aspect: named at all, with a positive opinion, with a negative one.
    named: Vec<bool>,
    voiced_pos: Vec<bool>,
    voiced_neg: Vec<bool>,
    /// Opinions on aspects the reviews hold opinions on, and how many agree with the majority.
    agree: f64,
    opinions: f64,
    /// Content words, those found in the reviews, and numbers the reviews do not have.
    content: usize,
    supported: usize,
    unsupported_numbers: usize,
}

fn mentions(profile: &ReviewProfile, toks: &[Token]) -> Mentions {
    let aspect_index: HashMap<&str, usize> = profile
        .aspects
        .iter()
        .enumerate()
        .map(|(i, a)| (a.stem.as_str(), i))
        .collect();
    let n = profile.aspects.len();
    let mut m = Mentions {
        named: vec![false; n],
        voiced_pos: vec![false; n],
        voiced_neg: vec![false; n],
        agree: 0.0,
        opinions: 0.0,
        content: 0,
        supported: 0,
        unsupported_numbers: 0,
    };
    for (i, t) in toks.iter().enumerate() {
        if t.number && !profile.numbers.contains(&t.stem) {
            m.unsupported_numbers += 1;
        }
        if !t.content {
            continue;
        }
        m.content += 1;
        if profile.vocabulary.contains(&t.stem) {
            m.supported += 1;
        }
        if let Some(&a) = aspect_index.get(t.stem.as_str()) {
            m.named[a] = true;
            let o = Lexical::opinion_at(toks, i);
            let asp = &profile.aspects[a];
            if o.abs() > 0.5 {
                if o > 0.0 {
                    m.voiced_pos[a] = true
                } else {
                    m.voiced_neg[a] = true
                }
                if asp.positive + asp.negative > 0 {
                    m.opinions += 1.0;
                    let majority_positive = asp.positive >= asp.negative;
                    if (o > 0.0) == majority_positive {
                        m.agree += 1.0;
                    }
                }
            }
        }
    }
    m
}

/// Aspect coverage, opinion faithfulness and opinion coverage.
struct Coverage {
    /// Share of the aspects' weight the summary names.
    coverage: f64,
    aspect_coverage: f64,
    faithfulness: f64,
    opinion_coverage: f64,
}

fn coverage_scores(profile: &ReviewProfile, m: &Mentions) -> Coverage {
    let total_weight: f64 = profile.aspects.iter().map(|a| a.weight).sum();
    let covered: f64 = profile
        .aspects
        .iter()
        .zip(&m.named)
        .filter(|(_, n)| **n)
        .map(|(a, _)| a.weight)
        .sum();
    let coverage = if total_weight > 0.0 {
        covered / total_weight
    } else {
        0.0
    };
    let faithfulness = if m.opinions > 0.0 {
        5.0 * (m.agree + 0.5) / (m.opinions + 1.0)
    } else {
        2.5
    };
    let (mut want, mut got) = (0.0, 0.0);
    for (a, asp) in profile.aspects.iter().enumerate() {
        if asp.positive >= 2 {
            want += asp.weight;
            if m.voiced_pos[a] {
                got += asp.weight;
            }
        }
        if asp.negative >= 2 {
            want += asp.weight;
            if m.voiced_neg[a] {
                got += asp.weight;
            }
        }
    }
    let opinion_coverage = if want > 0.0 {
        5.0 * (got / want).sqrt()
    } else {
        2.5
    };
    Coverage {
        coverage,
        aspect_coverage: 5.0 * coverage.sqrt(),
        faithfulness,
        opinion_coverage,
    }
}

/// Conciseness (redundancy and length), and the share of repeated trigrams.
fn conciseness(toks: &[Token], sents: &[&str], coverage: f64) -> (f64, f64) {
    let n_words = toks.len();
    let mut seen_sent = HashSet::new();
    let repeated_sents = sents
        .iter()
        .filter(|s| !seen_sent.insert(words(s).join(" ")))
        .count();
    let stems: Vec<&str> = toks.iter().map(|t| t.stem.as_str()).collect();
    let trigrams: Vec<&[&str]> = stems.windows(3).collect();
    let distinct: HashSet<&[&str]> = trigrams.iter().copied().collect();
    let repeated_tri = if trigrams.is_empty() {
        0.0
    } else {
        1.0 - distinct.len() as f64 / trigrams.len() as f64
    };
    // Summaries under 100 words leave things out (the LLM judges agree: their
    // scores correlate with length at about 0.35-0.4 Spearman on OpinPref).
    let length_penalty = if n_words < 100 {
        (100 - n_words) as f64 / 100.0 * 3.0
    } else if n_words > 160 {
        ((n_words - 160) as f64 / 160.0 * 2.0).min(2.0)
    } else {
        0.0
    };
    let score = (5.0
        - 6.0 * repeated_tri
        - 1.5 * repeated_sents as f64
        - length_penalty
        - 1.5 * (1.0 - coverage))
        .clamp(0.0, 5.0);
    (score, repeated_tri)
}

/// Relevance and hallucination, from support in the reviews and the summary's voice.
struct Voice {
    relevance: f64,
    hallucination: f64,
    first_person: f64,
    attributed: bool,
}

fn voice_scores(toks: &[Token], support: f64, unsupported_numbers: usize) -> Voice {
    // Voice: an opinion summary reports what reviewers say; one written in
    // the first person copies a review's experiences as its own. On
    // OpinPref's training summaries the first-person share correlates
    // about -0.4 and naming the reviewers about +0.5 with every stored score.
    let first_person =
        toks.iter().filter(|t| t.first_person).count() as f64 / toks.len().max(1) as f64;
    let attributed = toks.iter().any(|t| t.names_reviewers);
    let off_topic = (0.5 - support).max(0.0);
    let relevance = (3.5 + 1.5 * attributed as u8 as f64 - 20.0 * first_person - 10.0 * off_topic)
        .clamp(0.0, 5.0);
    let hallucination = (5.0
        - 40.0 * first_person
        - 1.5 * (!attributed) as u8 as f64
        - 10.0 * off_topic
        - 1.0 * unsupported_numbers as f64)
        .clamp(0.0, 5.0);
    Voice {
        relevance,
        hallucination,
        first_person,
        attributed,
    }
}

/// Well-formedness: sentences that start upper-case, end with punctuation,
/// have a sane length; doubled words cost a point each.
fn language_score(summary: &str, sents: &[&str]) -> f64 {
    if sents.is_empty() {
        return 0.0;
    }
    let mut ok = 0.0;
    for s in sents {
        let starts_upper = s
            .chars()
            .next()
            .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit());
        let ends = s.ends_with(['.', '!', '?']);
        let len = words(s).len();
        ok +=
            (starts_upper as u8 as f64 + ends as u8 as f64 + (3..=45).contains(&len) as u8 as f64)
                / 3.0;
    }
    let doubled = words(summary)
        .windows(2)
        .filter(|w| w[0] == w[1] && w[0].chars().all(char::is_alphabetic))
        .count();
    (5.0 * ok / sents.len() as f64 - doubled as f64).clamp(0.0, 5.0)
}

/// Buckets of the hashed bag of words in the distilled featurizer's inputs.
const WORD_BUCKETS: usize = 64;

/// Number of inputs of the distilled featurizer.
pub const DISTILL_INPUTS: usize = 16 + WORD_BUCKETS;

/// Inputs of the distilled featurizer: the seven lexical scores / 5 and the
/// statistics behind them, each scaled to about 0..1.
pub fn distill_inputs(
    lx: &Lexical,
    profile: &ReviewProfile,
    summary: &str,
) -> [f32; DISTILL_INPUTS] {
    let a = lx.analyze(profile, summary);
    let mut out = [0f32; DISTILL_INPUTS];
    for (o, s) in out.iter_mut().zip(a.scores) {
        *o = (s / 5.0) as f32;
    }
    let w = a.words as f64 / 100.0;
    let rest = [
        a.coverage,
        a.support,
        w,
        w * w,
        a.sentences as f64 / 10.0,
        (a.unsupported_numbers as f64 / 5.0).min(1.0),
        (a.opinions as f64 / 10.0).min(1.0),
        if a.opinions > 0 {
            a.agreeing as f64 / a.opinions as f64
        } else {
            0.5
        },
        a.repeated_trigrams,
    ];
    for (i, v) in rest.iter().enumerate() {
        out[7 + i] = *v as f32;
    }
    // A hashed bag of the summary's words (stable across runs: blake3, not the std hasher).
    let ws = words(summary);
    let scale = 1.0 / (ws.len().max(1) as f32).sqrt();
    for w in &ws {
        let h = blake3::hash(w.as_bytes());
        let b = u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) as usize % WORD_BUCKETS;
        out[16 + b] += scale;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> Vec<String> {
        [
            "The battery lasts two days. The screen is bright and sharp.",
            "Great battery life, but the screen scratches easily.",
            "Battery is excellent. Sound is tinny and the screen is not good in sunlight.",
            "I love the screen. The battery died after a year though.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn finds_recurring_aspects_and_their_opinions() {
        let lx = Lexical::new();
        let p = lx.profile(&reviews());
        let stems: Vec<&str> = p.aspects.iter().map(|a| a.stem.as_str()).collect();
        assert_eq!(&stems[..2], &["batteri", "screen"], "{:?}", p.aspects);
        assert_eq!(p.aspects[0].weight, 1.0);
        assert!(
            p.aspects[1].positive >= 2 && p.aspects[1].negative >= 1,
            "{:?}",
            p.aspects[1]
        );
    }

    #[test]
    fn better_summaries_score_higher() {
        let lx = Lexical::new();
        let p = lx.profile(&reviews());
        let good = lx.score(&p, "Reviewers praise the long battery life and love the bright screen, though some say the screen scratches easily and is hard to read in sunlight. The sound is tinny.");
        let off = lx.score(&p, "The blender crushes ice quickly and the lid seals tightly. Customers adore the stainless steel jar.");
        let broken = lx.score(&p, "battery battery battery battery");
        for k in [0, 4, 5] {
            assert!(good[k] > off[k], "dimension {k}: {good:?} vs {off:?}");
        }
        assert!(
            good[6] > broken[6] && good[3] > broken[3],
            "{good:?} vs {broken:?}"
        );
        assert!(good.iter().all(|x| (0.0..=5.0).contains(x)));
    }

    #[test]
    fn a_summary_speaking_as_a_reviewer_scores_lower_on_relevance_and_hallucination() {
        let lx = Lexical::new();
        let p = lx.profile(&reviews());
        let reported = lx.analyze(
            &p,
            "Reviewers praise the battery life and the bright screen.",
        );
        let copied = lx.analyze(&p, "I love the battery life and my screen is bright.");
        assert!(reported.attributed && !copied.attributed);
        // 2 first-person words of 10.
        assert!((copied.first_person - 0.2).abs() < 1e-9);
        assert_eq!(reported.first_person, 0.0);
        for k in [4, 5] {
            assert!(
                reported.scores[k] > copied.scores[k],
                "dimension {k}: {:?} vs {:?}",
                reported.scores,
                copied.scores
            );
        }
    }

    #[test]
    fn negation_flips_an_opinion() {
        let lx = Lexical::new();
        let p = lx.profile(&reviews());
        let toks = lx.tokens("the screen is not good");
        assert!(Lexical::opinion_at(&toks, 1) < 0.0);
        let toks = lx.tokens("the screen is good");
        assert!(Lexical::opinion_at(&toks, 1) > 0.0);
        assert!(!p.vocabulary.is_empty());
    }

    #[test]
    fn splits_sentences_and_words() {
        assert_eq!(sentences("One. Two!\nThree"), ["One.", "Two!", "Three"]);
        assert_eq!(
            words("It's GREAT, isn't it?"),
            ["it's", "great", "isn't", "it"]
        );
    }
}
