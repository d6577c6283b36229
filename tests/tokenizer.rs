//! The tokenizer stage kind against Hugging Face's Python `tokenizers`:
//! tests/fixtures/tokenizer/tokenizer.json is what our training produces on
//! the Copycat Amazon test reviews (regenerate with EFRLHF_WRITE_FIXTURES=1),
//! and check_tokenizer.py recorded how Python `tokenizers` 0.23.3 loads and
//! encodes it (python_encodings.json).

use std::path::{Path, PathBuf};

use efrlhf::stages::dataset::{FieldMap, load};
use efrlhf::stages::tokenizer::{TrainOptions, roundtrip_rate, train};
use tokenizers::Tokenizer;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(rel)
}

fn training_texts() -> Vec<String> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/copycat_amazon");
    let products = load("copycat-amazon", &data, true, &FieldMap::default())
        .unwrap()
        .products;
    products
        .into_iter()
        .filter(|p| p.split == "test")
        .flat_map(|p| p.reviews)
        .collect()
}

fn options() -> TrainOptions {
    TrainOptions {
        vocab_size: 1000,
        min_frequency: 2,
        special_tokens: ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

#[test]
fn training_is_deterministic_and_reproduces_the_fixture() {
    let texts = training_texts();
    assert_eq!(texts.len(), 32 * 8);
    let tk = train(&texts, &options()).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&tk.to_string(true).unwrap()).unwrap();
    if std::env::var_os("EFRLHF_WRITE_FIXTURES").is_some() {
        std::fs::write(fixture("tokenizer.json"), tk.to_string(true).unwrap()).unwrap();
    }
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(ours, committed);
    let again: serde_json::Value =
        serde_json::from_str(&train(&texts, &options()).unwrap().to_string(true).unwrap()).unwrap();
    assert_eq!(ours, again);
    assert_eq!(tk.get_vocab_size(true), 1000);
    // BART's special-token ids.
    for (t, id) in [
        ("<s>", 0),
        ("<pad>", 1),
        ("</s>", 2),
        ("<unk>", 3),
        ("<mask>", 4),
    ] {
        assert_eq!(tk.token_to_id(t), Some(id));
    }
}

#[test]
fn python_tokenizers_loads_it_and_agrees_on_every_id() {
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("python_encodings.json")).unwrap())
            .unwrap();
    let tk = Tokenizer::from_file(fixture("tokenizer.json")).unwrap();
    let samples = recorded["samples"].as_array().unwrap();
    assert!(samples.len() >= 20);
    for s in samples {
        let text = s["text"].as_str().unwrap();
        let ids: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let enc = tk.encode(text, true).unwrap();
        assert_eq!(enc.get_ids(), &ids[..], "ids differ for {text:?}");
        assert_eq!(ids.first(), Some(&0), "<s> first");
        assert_eq!(ids.last(), Some(&2), "</s> last");
        assert!(
            s["python_roundtrip"].as_bool().unwrap(),
            "python decode differs for {text:?}"
        );
        assert_eq!(tk.decode(&ids, true).unwrap(), text);
    }
}

#[test]
fn round_trips_unseen_text() {
    let tk = Tokenizer::from_file(fixture("tokenizer.json")).unwrap();
    let texts: Vec<String> = [
        "Zürich café — naïve 😀 emoji",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines",
        "数字 123 and ümlauts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(roundtrip_rate(&tk, &texts).unwrap(), 1.0);
}
