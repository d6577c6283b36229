//! Text processing: ROUGE exactly as Google's `rouge-score` computes it, and
//! the lexical estimates of the seven domain-knowledge scores.

pub mod lexical;
pub mod rouge;
