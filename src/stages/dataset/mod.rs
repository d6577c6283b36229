//! The `dataset` stage kind: loads a source into normalized products
//! (`products.jsonl`, see [`schema`]), then re-splits, filters, shuffles and
//! limits them, deterministically for a given seed.

pub mod schema;
mod sources;

use std::collections::BTreeMap;

pub use schema::{
    Candidate, Category, DOMAIN_KEYS, Preference, Product, read_products, write_products,
};
pub use sources::{FieldMap, Loaded, OPOSUM_DOMAINS, RowError, SOURCES, load};

use super::{Stage, StageContext, param_bool, param_f64, param_i64, param_str, param_strs};
use crate::dsl::Metrics;

pub struct DatasetStage;

/// Options applied after loading.
#[derive(Debug, Clone)]
pub struct Selection {
    pub split: String,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    pub shuffle: bool,
    pub limit: usize,
    pub seed: u64,
}

/// Re-splits (when a fraction is set), filters by split, shuffles and limits.
/// Re-splitting orders products by a seeded hash of their id, so a product's
/// split does not depend on file order.
pub fn select(mut products: Vec<Product>, sel: &Selection) -> Vec<Product> {
    if sel.validation_fraction > 0.0 || sel.test_fraction > 0.0 {
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
    let want = schema::normalize_split(&sel.split);
    if want != "all" {
        products.retain(|p| p.split == want);
    }
    if sel.shuffle {
        crate::rng::Rng::new(sel.seed).shuffle(&mut products);
    }
    if sel.limit > 0 {
        products.truncate(sel.limit);
    }
    products
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

impl Stage for DatasetStage {
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<Metrics, String> {
        let p = ctx.params;
        let source = param_str(p, "source")?;
        let path = std::path::PathBuf::from(param_str(p, "path")?);
        let delimiter = match param_str(p, "delimiter")? {
            "\\t" | "\t" | "tab" => b'\t',
            d if d.len() == 1 => d.as_bytes()[0],
            d => {
                return Err(format!(
                    "`delimiter` must be one character (or \"\\t\"), found {d:?}"
                ));
            }
        };
        let fields = FieldMap {
            id: param_str(p, "id-field")?.to_string(),
            reviews: param_strs(p, "reviews-fields")?,
            references: param_strs(p, "references-fields")?,
            split: param_str(p, "split-field")?.to_string(),
            delimiter,
        };
        let loaded = load(source, &path, param_bool(p, "strict")?, &fields)?;
        for e in &loaded.skipped {
            let _ = writeln!(ctx.log, "skipped {e}");
        }
        let sel = Selection {
            split: param_str(p, "split")?.to_string(),
            validation_fraction: param_f64(p, "validation-fraction")?,
            test_fraction: param_f64(p, "test-fraction")?,
            shuffle: param_bool(p, "shuffle")?,
            limit: param_i64(p, "limit")?.max(0) as usize,
            seed: ctx.seed as u64,
        };
        if sel.validation_fraction + sel.test_fraction > 1.0 {
            return Err("`validation-fraction` + `test-fraction` exceed 1".into());
        }
        let products = select(loaded.products, &sel);
        if products.is_empty() {
            return Err(format!(
                "no products left after selecting split `{}` (limit {})",
                sel.split, sel.limit
            ));
        }
        write_products(ctx.output, &products)?;
        let metrics = summarize(&products, loaded.skipped.len());
        let info = serde_json::json!({"format_version": schema::FORMAT_VERSION, "source": source, "counts": metrics});
        std::fs::write(
            ctx.output.join("dataset.json"),
            serde_json::to_vec_pretty(&info).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write dataset.json: {e}"))?;
        let _ = writeln!(
            ctx.log,
            "{} products from {source} ({} skipped)",
            products.len(),
            loaded.skipped.len()
        );
        Ok(metrics)
    }
}
