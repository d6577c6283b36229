//! Text processing: ROUGE exactly as Google's `rouge-score` computes it, the
//! lexical estimates of the seven domain-knowledge scores, and the client of
//! an LLM that judges text.

pub mod lexical;
pub mod llm;
pub mod rouge;
