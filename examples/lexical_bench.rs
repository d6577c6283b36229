//! Throughput of the lexical featurizer on one core: every OpinPref summary
//! (1,880, with its product's reviews profiled once per product).
//! `cargo run --release --example lexical_bench` prints JSON (see BENCHMARKS.md).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Instant;

use efrlhf::stages::dataset::{FieldMap, load};
use efrlhf::stages::featurize::lexical_scores;

fn main() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/opinpref");
    let products = load("opinpref", &data, true, &FieldMap::default())
        .expect("OpinPref loads")
        .products;
    let summaries: usize = products.iter().map(|p| p.candidates.len()).sum();
    let reviews: usize = products.iter().map(|p| p.reviews.len()).sum();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let scores = lexical_scores(&products);
        let s = t.elapsed().as_secs_f64();
        assert_eq!(scores.iter().map(Vec::len).sum::<usize>(), summaries);
        rates.push(summaries as f64 / s);
    }
    rates.sort_by(f64::total_cmp);
    let peak_rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "lexical featurizer, one thread",
            "products": products.len(),
            "reviews": reviews,
            "summaries": summaries,
            "summaries_per_second": {"median": rates[2], "min": rates[0], "max": rates[4], "runs": rates.len()},
            "peak_rss_kib": peak_rss_kib,
        })
    );
}
