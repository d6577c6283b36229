//! Text processing: ROUGE exactly as Google's `rouge-score` computes it.

pub mod rouge;
