//! What a model reads for a product: the `prompt` parameter, a Jinja
//! template over the product (`reviews`: the list of review texts,
//! `product`: its id), then the tokenizer's chat template when it has one
//! (one user message, `add_generation_prompt`, as `apply_chat_template`),
//! then token ids. `max-source` cuts the reviews, never the template's own
//! text. A causal model's target is the completion plus EOS (TRL's
//! completion-only data); BART's is `<s> summary </s>`.

use std::path::Path;

use minijinja::{Environment, context};
use tokenizers::Tokenizer;

use super::dataset::Product;
use super::model::{cut_keeping_eos, encode};
use crate::ml::lm::LanguageModel;
use crate::text::chat::{ChatTemplate, template_error};

/// The prompt a causal model gets when the stage sets none.
pub const DEFAULT_CAUSAL_PROMPT: &str = "Summarize these reviews of one product in a few sentences.\n\n{% for r in reviews %}Review {{ loop.index }}: {{ r }}\n{% endfor %}";

/// How sources and targets are tokenized for one model.
pub struct Prompter {
    /// The `prompt` parameter (empty: the model's default).
    template: String,
    chat: Option<ChatTemplate>,
    /// Source and response share one sequence (a causal model).
    causal: bool,
    eos: u32,
    max_source: usize,
}

/// A tokenized source and whether its reviews were cut to fit.
pub struct Source {
    /// Token ids.
    pub ids: Vec<u32>,
    /// The reviews did not fit in `max-source` tokens.
    pub cut: bool,
}

impl Prompter {
    /// `template` is the stage's `prompt` (checked here: a syntax error
    /// points at its line); `tokenizer_dir` the folder whose
    /// `tokenizer_config.json` may hold a chat template.
    pub fn new(
        template: &str,
        tokenizer_dir: Option<&Path>,
        causal: bool,
        eos: u32,
        max_source: usize,
    ) -> Result<Prompter, String> {
        let template = if template.is_empty() && causal {
            DEFAULT_CAUSAL_PROMPT.to_string()
        } else {
            template.to_string()
        };
        let chat = match tokenizer_dir.filter(|_| causal) {
            Some(dir) => ChatTemplate::from_folder(dir)?,
            None => None,
        };
        let p = Prompter {
            template,
            chat,
            causal,
            eos,
            max_source,
        };
        if !p.template.is_empty() {
            p.render(&["a review".to_string()], "product")?;
        }
        Ok(p)
    }

    /// The text of the prompt with `reviews`.
    fn render(&self, reviews: &[String], product: &str) -> Result<String, String> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        let t = env
            .template_from_named_str("prompt", &self.template)
            .map_err(|e| prompt_error(&e))?;
        let user = t
            .render(context! { reviews => reviews.to_vec(), product => product })
            .map_err(|e| prompt_error(&e))?;
        match &self.chat {
            Some(chat) => chat.render_prompt(&user),
            None => Ok(user),
        }
    }

    fn tokens(&self, tk: &Tokenizer, text: &str) -> Result<Vec<u32>, String> {
        // A chat template writes its own special tokens.
        let special = self.chat.is_none();
        Ok(tk
            .encode(text, special)
            .map_err(|e| format!("cannot tokenize: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// [`Prompter::new`] for `model`, whose tokenizer folder is `tokenizer_dir`.
    pub fn for_model<M: LanguageModel>(
        template: &str,
        tokenizer_dir: &Path,
        model: &M,
        max_source: i64,
    ) -> Result<Prompter, String> {
        Prompter::new(
            template,
            Some(tokenizer_dir),
            model.shares_positions(),
            model.eos(),
            max_source as usize,
        )
    }

    /// The source of `product`.
    pub fn source(&self, tk: &Tokenizer, product: &Product) -> Result<Source, String> {
        self.source_of(tk, &product.reviews, &product.id)
    }

    /// The source of a product's `reviews`, the product's id being `id`.
    pub fn source_of(
        &self,
        tk: &Tokenizer,
        reviews: &[String],
        id: &str,
    ) -> Result<Source, String> {
        let reviews: Vec<String> = reviews.iter().map(|r| r.trim().to_string()).collect();
        if self.template.is_empty() {
            // BART's source: the reviews joined, `<s> ... </s>`, cut at max-source.
            let mut ids = self.tokens(tk, &reviews.join(" "))?;
            let cut = cut_keeping_eos(&mut ids, self.max_source, self.eos);
            return Ok(Source { ids, cut });
        }
        let ids = self.tokens(tk, &self.render(&reviews, id)?)?;
        if ids.len() <= self.max_source {
            return Ok(Source { ids, cut: false });
        }
        // The longest prefix of the reviews (in characters) that fits.
        let total: usize = reviews.iter().map(|r| r.chars().count()).sum();
        let (mut lo, mut hi) = (0usize, total);
        let mut best = None;
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let ids = self.tokens(tk, &self.render(&cut_reviews(&reviews, mid), id)?)?;
            if ids.len() <= self.max_source {
                best = Some(ids);
                lo = mid + 1;
            } else if mid == 0 {
                break;
            } else {
                hi = mid - 1;
            }
        }
        let ids = best.ok_or_else(|| {
            format!(
                "the prompt without any review is longer than max-source ({} tokens): raise `max-source` or shorten `prompt`",
                self.max_source
            )
        })?;
        Ok(Source { ids, cut: true })
    }

    /// A target: BART's `<s> text </s>` cut at `max` (EOS kept), or a causal
    /// model's completion tokens plus EOS.
    pub fn target(&self, tk: &Tokenizer, text: &str, max: usize) -> Result<Vec<u32>, String> {
        if !self.causal {
            return encode(tk, text, max, self.eos);
        }
        let mut ids: Vec<u32> = tk
            .encode(text, false)
            .map_err(|e| format!("cannot tokenize: {e}"))?
            .get_ids()
            .to_vec();
        ids.truncate(max.saturating_sub(1));
        ids.push(self.eos);
        Ok(ids)
    }
}

/// The reviews cut to `chars` characters in all, the last one kept partly.
fn cut_reviews(reviews: &[String], chars: usize) -> Vec<String> {
    let mut left = chars;
    let mut out = Vec::new();
    for r in reviews {
        if left == 0 {
            break;
        }
        let n = r.chars().count();
        if n <= left {
            out.push(r.clone());
            left -= n;
        } else {
            out.push(r.chars().take(left).collect());
            left = 0;
        }
    }
    out
}

fn prompt_error(e: &minijinja::Error) -> String {
    template_error("`prompt`", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_are_cut_from_the_end_characters_first() {
        let r = vec!["abcd".to_string(), "efgh".to_string()];
        assert_eq!(cut_reviews(&r, 6), vec!["abcd", "ef"]);
        assert_eq!(cut_reviews(&r, 4), vec!["abcd"]);
        assert_eq!(cut_reviews(&r, 0), Vec::<String>::new());
        assert_eq!(cut_reviews(&r, 100), r);
    }
}
