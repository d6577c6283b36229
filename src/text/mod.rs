//! Text processing: ROUGE exactly as Google's `rouge-score` computes it, the
//! lexical estimates of the seven domain-knowledge scores, the client of an
//! LLM that judges text, and chat templates as transformers renders them.

pub mod chat;
pub mod lexical;
pub mod llm;
pub mod rouge;
