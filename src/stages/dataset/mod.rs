//! The `dataset` stage kind: loads a source into normalized products
//! (`products.jsonl`, see [`schema`]), then re-splits, filters, shuffles and
//! limits them, deterministically for a given seed.

mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::stages::formats::dataset::{
    Candidate, Category, DOMAIN_KEYS, Preference, Product, read_products, write_products,
};
pub use sources::{FieldMap, Loaded, OPOSUM_DOMAINS, RowError, SOURCES, load};

use crate::stages::formats::dataset::{FORMAT_VERSION, normalize_split};
use crate::stages::kind::{Kind, Metrics, StageContext};

/// The `dataset` kind.
pub struct DatasetStage;

/// Options applied after loading.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Keep only this split (`all` keeps every one).
    pub split: String,
    /// Re-split: share of products put in validation.
    pub validation_fraction: f64,
    /// Re-split: share of products put in test.
    pub test_fraction: f64,
    /// Shuffle (seeded).
    pub shuffle: bool,
    /// Keep the first N (0: all).
    pub limit: usize,
    /// Seeds the re-split and the shuffle.
    pub seed: u64,
}

/// Re-splits (when a fraction is set), filters by split, shuffles and limits.
/// Re-splitting orders products by a seeded hash of their id, so a product's
/// split does not depend on file order. When re-splitting, `shuffle` and
/// `limit` pick the products first and the fractions divide those (`limit
/// 120` with `validation-fraction 0.2` gives 96 train and 24 validation);
/// otherwise they apply to the split kept.
pub fn select(mut products: Vec<Product>, sel: &Selection) -> Vec<Product> {
    let resplit = sel.validation_fraction > 0.0 || sel.test_fraction > 0.0;
    if resplit {
        shuffle_and_limit(&mut products, sel);
    }
    if resplit {
        let mut keyed: Vec<(String, Product)> = products
            .into_iter()
            .map(|p| {
                (
                    blake3::hash(format!("{}\0{}", sel.seed, p.id).as_bytes())
                        .to_hex()
                        .to_string(),
                    p,
                )
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let n = keyed.len();
        let n_test = (sel.test_fraction * n as f64).round() as usize;
        let n_val = ((sel.validation_fraction * n as f64).round() as usize).min(n - n_test.min(n));
        products = keyed
            .into_iter()
            .enumerate()
            .map(|(i, (_, mut p))| {
                p.split = if i < n_test {
                    "test".into()
                } else if i < n_test + n_val {
                    "validation".into()
                } else {
                    "train".into()
                };
                p
            })
            .collect();
    }
    let want = normalize_split(&sel.split);
    if want != "all" {
        products.retain(|p| p.split == want);
    }
    if !resplit {
        shuffle_and_limit(&mut products, sel);
    }
    products
}

fn shuffle_and_limit(products: &mut Vec<Product>, sel: &Selection) {
    if sel.shuffle {
        crate::rng::Rng::new(sel.seed).shuffle(products);
    }
    if sel.limit > 0 {
        products.truncate(sel.limit);
    }
}

/// Counts for `metrics.json`.
pub fn summarize(products: &[Product], skipped: usize) -> Metrics {
    let mut m = Metrics::new();
    m.insert("products".into(), products.len() as f64);
    m.insert(
        "reviews".into(),
        products.iter().map(|p| p.reviews.len()).sum::<usize>() as f64,
    );
    m.insert(
        "references".into(),
        products.iter().map(|p| p.references.len()).sum::<usize>() as f64,
    );
    m.insert(
        "candidates".into(),
        products.iter().map(|p| p.candidates.len()).sum::<usize>() as f64,
    );
    m.insert(
        "pairs".into(),
        products.iter().map(|p| p.preferences.len()).sum::<usize>() as f64,
    );
    m.insert("skipped".into(), skipped as f64);
    let mut splits: BTreeMap<&str, usize> = BTreeMap::new();
    for p in products {
        *splits.entry(p.split.as_str()).or_default() += 1;
    }
    for (s, n) in splits {
        m.insert(format!("split.{s}"), n as f64);
    }
    m
}

/// The source formats a dataset stage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// OpinPref's annotation files.
    #[default]
    Opinpref,
    /// PromptOpinSumm's JSONL.
    PromptOpinSumm,
    /// Copycat's Amazon summaries.
    CopycatAmazon,
    /// FewSum (Amazon and Yelp) with the model's outputs.
    Fewsum,
    /// Oposum+ with AceSum's outputs.
    OposumPlus,
    /// SummEval-OP with human ratings.
    SummevalOp,
    /// Any JSONL, fields mapped by the `*-field(s)` parameters.
    Jsonl,
    /// Any CSV or TSV, fields mapped likewise.
    Csv,
}

impl Source {
    /// The name `load` and the manifest use.
    pub fn name(self) -> &'static str {
        match self {
            Source::Opinpref => "opinpref",
            Source::PromptOpinSumm => "prompt-opin-summ",
            Source::CopycatAmazon => "copycat-amazon",
            Source::Fewsum => "fewsum",
            Source::OposumPlus => "oposum-plus",
            Source::SummevalOp => "summeval-op",
            Source::Jsonl => "jsonl",
            Source::Csv => "csv",
        }
    }
}

/// The parameters of `plugins/builtin/dataset.kdl` (`x-required`: the
/// manifest gives no default; the runner always passes them).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Params {
    /// The format of the files at `path`.
    #[schemars(extend("x-required" = true))]
    pub source: Source,
    /// A dataset folder or file.
    #[schemars(extend("x-required" = true))]
    pub path: PathBuf,
    /// Keep only this split (`all` keeps every one).
    pub split: String,
    /// Re-split: share of products put in validation.
    #[schemars(range(min = 0, max = 1))]
    pub validation_fraction: f64,
    /// Re-split: share of products put in test.
    #[schemars(range(min = 0, max = 1))]
    pub test_fraction: f64,
    /// Shuffle products (seeded).
    pub shuffle: bool,
    /// Keep the first N products (0: all).
    #[schemars(range(min = 0))]
    pub limit: i64,
    /// Fail on a bad row (else skip and count it).
    pub strict: bool,
    /// jsonl/csv: the id field.
    pub id_field: String,
    /// jsonl/csv: review fields.
    pub reviews_fields: Vec<String>,
    /// jsonl/csv: reference fields.
    pub references_fields: Vec<String>,
    /// jsonl/csv: the split field.
    pub split_field: String,
    /// csv: the column separator.
    pub delimiter: String,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            source: Source::default(),
            path: PathBuf::new(),
            split: "all".into(),
            validation_fraction: 0.0,
            test_fraction: 0.0,
            shuffle: false,
            limit: 0,
            strict: true,
            id_field: "id".into(),
            reviews_fields: vec!["reviews".into()],
            references_fields: vec![],
            split_field: String::new(),
            delimiter: ",".into(),
        }
    }
}

impl Params {
    fn delimiter_byte(&self) -> Result<u8, String> {
        match self.delimiter.as_str() {
            "\\t" | "\t" | "tab" => Ok(b'\t'),
            d if d.len() == 1 => Ok(d.as_bytes()[0]),
            d => Err(format!(
                "`delimiter` must be one character (or \"\\t\"), found {d:?}"
            )),
        }
    }

    fn selection(&self, seed: i64) -> Selection {
        Selection {
            split: self.split.clone(),
            validation_fraction: self.validation_fraction,
            test_fraction: self.test_fraction,
            shuffle: self.shuffle,
            limit: self.limit.max(0) as usize,
            seed: seed as u64,
        }
    }
}

/// A dataset stage takes no inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inputs {}

impl Kind for DatasetStage {
    type Params = Params;
    type Inputs = Inputs;

    fn check(&self, p: &Params) -> Result<(), String> {
        p.delimiter_byte()?;
        if p.validation_fraction + p.test_fraction > 1.0 {
            return Err("`validation-fraction` + `test-fraction` exceed 1".into());
        }
        Ok(())
    }

    fn run(&self, p: &Params, _: &Inputs, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let fields = FieldMap {
            id: p.id_field.clone(),
            reviews: p.reviews_fields.clone(),
            references: p.references_fields.clone(),
            split: p.split_field.clone(),
            delimiter: p.delimiter_byte()?,
        };
        let loaded = load(p.source.name(), &p.path, p.strict, &fields)?;
        for e in &loaded.skipped {
            let _ = writeln!(ctx.log, "skipped {e}");
        }
        let sel = p.selection(ctx.seed);
        let products = select(loaded.products, &sel);
        if products.is_empty() {
            return Err(format!(
                "no products left after selecting split `{}` (limit {})",
                sel.split, sel.limit
            ));
        }
        write_products(ctx.output, &products)?;
        let metrics = summarize(&products, loaded.skipped.len());
        let info = serde_json::json!({"format_version": FORMAT_VERSION, "source": p.source.name(), "counts": metrics});
        std::fs::write(
            ctx.output.join("dataset.json"),
            serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("cannot write dataset.json: {e}"))?;
        let _ = writeln!(
            ctx.log,
            "{} products from {} ({} skipped)",
            products.len(),
            p.source.name(),
            loaded.skipped.len()
        );
        Ok(metrics)
    }
}
