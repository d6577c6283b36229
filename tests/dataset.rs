//! The dataset stage kind: every source loads, with counts and field values
//! checked against the shipped files (values read independently with Python's
//! json and csv modules), and bad rows are reported with file and line.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use efrlhf::stages::dataset::{Category, FieldMap, Selection, load, select};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(rel)
}

fn split_count(p: &[efrlhf::stages::dataset::Product], split: &str) -> usize {
    p.iter().filter(|x| x.split == split).count()
}

#[test]
fn opinpref_split_files() {
    let l = load("opinpref", &data("opinpref"), true, &FieldMap::default()).unwrap();
    let p = l.products;
    assert_eq!(
        (split_count(&p, "train"), split_count(&p, "validation")),
        (800, 140)
    );
    let prefers_one = |split: &str| {
        p.iter()
            .filter(|x| x.split == split && x.preferences[0].preferred == 0)
            .count()
    };
    assert_eq!(prefers_one("validation"), 68);
    assert_eq!(prefers_one("train"), 394);
    let v0 = p.iter().find(|x| x.split == "validation").unwrap();
    assert_eq!(v0.id, "5327813f-b520-11ee-83fe-95f8e2422acc");
    assert_eq!(v0.reviews.len(), 10);
    assert_eq!(v0.candidates[0].index, Some(6));
    assert_eq!(v0.candidates[0].category, Some(Category::VeryBad));
    assert_eq!(v0.candidates[1].index, Some(5));
    assert_eq!(v0.candidates[1].category, Some(Category::SlightlyBad));
    assert!(
        v0.candidates[0]
            .text
            .starts_with("This firewire card is not even compatible with my 64-bit Win")
    );
    let s1 = v0.candidates[1].scores.as_ref().unwrap();
    assert_eq!(
        (
            s1["aspect-coverage"],
            s1["conciseness"],
            s1["language-correctness"]
        ),
        (4.5, 4.5, 5.0)
    );
    let s0 = v0.candidates[0].scores.as_ref().unwrap();
    assert_eq!((s0["aspect-coverage"], s0["conciseness"]), (0.0, 1.25));
    assert_eq!(
        v0.preferences[0].preferred, 1,
        "preference-data 2 means summary two"
    );
    assert_eq!(v0.preferences[0].annotator.as_deref(), Some("rupasai"));
    let reviews = |split: &str| {
        p.iter()
            .filter(|x| x.split == split)
            .map(|x| x.reviews.len())
            .sum::<usize>()
    };
    assert_eq!((reviews("train"), reviews("validation")), (10445, 1853));
}

#[test]
fn opinpref_single_file_as_downloaded_from_the_hub() {
    // The hub's single file has no split in its name: its rows are `unsplit`.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("opinpref-hub");
    std::fs::create_dir_all(&dir).unwrap();
    // (The train file does not end in a newline.)
    let all = std::fs::read_to_string(data("opinpref/annotations-train.jsonl"))
        .unwrap()
        .trim_end()
        .to_string()
        + "\n"
        + &std::fs::read_to_string(data("opinpref/annotations-valid.jsonl")).unwrap();
    std::fs::write(dir.join("opin-pref.jsonl"), all).unwrap();
    let p = load(
        "opinpref",
        &dir.join("opin-pref.jsonl"),
        true,
        &FieldMap::default(),
    )
    .unwrap()
    .products;
    assert_eq!(p.len(), 940);
    assert!(p.iter().all(|x| x.split == "unsplit"));
    let p = load("opinpref", &dir, true, &FieldMap::default())
        .unwrap()
        .products;
    assert_eq!(p.len(), 940);
    // Re-splitting is seeded and by id.
    let sel = Selection {
        split: "validation".into(),
        validation_fraction: 0.15,
        test_fraction: 0.0,
        shuffle: false,
        limit: 0,
        seed: 7,
    };
    let a = select(p.clone(), &sel);
    assert_eq!(a.len(), 141);
    let mut rev = p.clone();
    rev.reverse();
    let b = select(rev, &sel);
    let ids = |v: &[efrlhf::stages::dataset::Product]| {
        let mut i: Vec<String> = v.iter().map(|x| x.id.clone()).collect();
        i.sort();
        i
    };
    assert_eq!(
        ids(&a),
        ids(&b),
        "a product's split does not depend on file order"
    );
}

#[test]
fn prompt_opin_summ_fixture() {
    let p = load(
        "prompt-opin-summ",
        &fixture("prompt-opin-summ-valid.jsonl"),
        true,
        &FieldMap::default(),
    )
    .unwrap()
    .products;
    assert_eq!(p.len(), 3);
    assert_eq!(p[1].id, "pos-1");
    assert_eq!(p[1].split, "validation");
    assert_eq!(p[1].candidates.len(), 9);
    let cats: Vec<Category> = p[1]
        .candidates
        .iter()
        .map(|c| c.category.unwrap())
        .collect();
    assert_eq!(&cats[..3], &[Category::Good; 3]);
    assert_eq!(&cats[3..6], &[Category::SlightlyBad; 3]);
    assert_eq!(&cats[6..], &[Category::VeryBad; 3]);
    assert_eq!(
        p[1].candidates[7].scores.as_ref().unwrap()["opinion-coverage"],
        1.0
    );
    assert!(p[0].preferences.is_empty());
}

#[test]
fn copycat_amazon() {
    let p = load(
        "copycat-amazon",
        &data("copycat_amazon"),
        true,
        &FieldMap::default(),
    )
    .unwrap()
    .products;
    assert_eq!(
        (split_count(&p, "validation"), split_count(&p, "test")),
        (28, 32)
    );
    let t0 = p.iter().find(|x| x.split == "test").unwrap();
    assert_eq!(
        (t0.id.as_str(), t0.domain.as_deref()),
        ("B0013EQ20Y", Some("cloth"))
    );
    assert_eq!((t0.reviews.len(), t0.references.len()), (8, 3));
    assert!(
        t0.references[0]
            .starts_with("Nice boots but run a bit narrow. They look great but I think")
    );
    assert_eq!(
        p.iter().rfind(|x| x.split == "test").unwrap().id,
        "B006NNLX2C"
    );
    let q = p.iter().find(|x| x.id == "B005BQ6YYO").unwrap();
    assert!(q.references[0].starts_with("This is the perfect \"comfy shoe,\" great for walking"));
    assert_eq!(q.references[0].chars().count(), 250);
}

#[test]
fn fewsum_amazon_and_yelp() {
    let a = load("fewsum", &data("fewsum/amazon"), true, &FieldMap::default())
        .unwrap()
        .products;
    assert_eq!(
        (
            split_count(&a, "train"),
            split_count(&a, "validation"),
            split_count(&a, "test")
        ),
        (28, 12, 20)
    );
    let t0 = a.iter().find(|x| x.split == "test").unwrap();
    assert_eq!(t0.id, "B004X86A86");
    assert_eq!(t0.review_ratings.len(), 8);
    assert_eq!((t0.review_ratings[0], t0.review_ratings[7]), (4.0, 3.0));
    assert_eq!(t0.candidates[0].system.as_deref(), Some("fewsum"));
    assert!(
        t0.candidates[0]
            .text
            .starts_with("This purse is not as cute as it looks in the picture. It is very small")
    );
    // The model's outputs exist for validation and test products only.
    assert_eq!(a.iter().filter(|x| !x.candidates.is_empty()).count(), 32);
    let y = load("fewsum", &data("fewsum/yelp"), true, &FieldMap::default())
        .unwrap()
        .products;
    assert_eq!(
        (
            split_count(&y, "train"),
            split_count(&y, "validation"),
            split_count(&y, "test")
        ),
        (30, 30, 40)
    );
    let both = load("fewsum", &data("fewsum"), true, &FieldMap::default())
        .unwrap()
        .products;
    assert_eq!(both.len(), 160);
}

#[test]
fn oposum_plus_with_acesum_outputs() {
    let p = load(
        "oposum-plus",
        &data("oposum_plus"),
        true,
        &FieldMap::default(),
    )
    .unwrap()
    .products;
    assert_eq!(
        (split_count(&p, "validation"), split_count(&p, "test")),
        (30, 30)
    );
    let t = p.iter().find(|x| x.id == "bag-test-0").unwrap();
    assert_eq!(t.reviews.len(), 10);
    assert!(
        t.reviews[0].starts_with(
            "it was very small and tight . i really did not like it . the pink flowers"
        )
    );
    assert!(t.references[0].starts_with("like it protects my laptop well this stylish bag i"));
    assert_eq!(
        t.aspect_references.keys().collect::<Vec<_>>(),
        ["fit", "looks", "quality"]
    );
    // AceSum's 6th output line belongs to the first boots test product.
    let b = p.iter().find(|x| x.id == "boots-test-0").unwrap();
    assert!(
        b.candidates[0]
            .text
            .starts_with("these boots are very comfortable. they're a little more time")
    );
    assert!(b.references[0].starts_with("they do have good ankle support however the boots"));
    assert_eq!(
        p.iter()
            .filter(|x| x.split == "test" && x.candidates.len() == 1)
            .count(),
        30
    );
}

#[test]
fn summeval_op_with_human_ratings() {
    let p = load(
        "summeval-op",
        &data("summeval_op"),
        true,
        &FieldMap::default(),
    )
    .unwrap()
    .products;
    assert_eq!(p.len(), 32);
    assert_eq!(p[0].candidates.len(), 13);
    assert!(p[0].reviews[0].starts_with("i really like these boots. they can be a beast to"));
    assert!(p[0].references[0].starts_with("Nice boots but run a bit narrow. They look great b"));
    let gpt4 = p[0]
        .candidates
        .iter()
        .find(|c| c.system.as_deref() == Some("gpt-4"))
        .unwrap();
    let h = gpt4.human.as_ref().unwrap();
    assert_eq!(
        (h["relevance"], h["fluency"], h["aspect-coverage"]),
        (4.33, 5.0, 5.0)
    );
}

#[test]
fn generic_jsonl_and_csv_with_field_mapping() {
    let fields = FieldMap {
        id: "pid".into(),
        reviews: vec!["text".into()],
        references: vec!["gold".into()],
        split: "part".into(),
        delimiter: b',',
    };
    let p = load("jsonl", &fixture("custom.jsonl"), true, &fields)
        .unwrap()
        .products;
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].reviews, ["Loud fan.", "Cools well."]);
    assert_eq!(
        (p[1].split.as_str(), p[1].references.len()),
        ("validation", 2)
    );
    let fields = FieldMap {
        id: "pid".into(),
        reviews: vec!["r1".into(), "r2".into()],
        references: vec!["gold".into()],
        split: String::new(),
        delimiter: b',',
    };
    let p = load("csv", &fixture("custom.csv"), true, &fields)
        .unwrap()
        .products;
    assert_eq!(p[0].reviews, ["Great, really great", "Fine"]);
    assert_eq!(p[1].reviews, ["Bad"], "empty cells are not reviews");
    assert_eq!(p[1].references, ["Summary two"]);
}

#[test]
fn corrupted_rows_name_file_and_line_or_are_counted() {
    let f = fixture("opinpref-corrupt-valid.jsonl");
    let err = load("opinpref", &f, true, &FieldMap::default()).unwrap_err();
    assert!(
        err.contains("opinpref-corrupt-valid.jsonl:2: invalid JSON"),
        "{err}"
    );
    assert!(err.contains("strict #false"), "{err}");
    let l = load("opinpref", &f, false, &FieldMap::default()).unwrap();
    assert_eq!(l.products.len(), 2);
    let msgs: Vec<String> = l
        .skipped
        .iter()
        .map(|e| format!("{}: {}", e.line, e.message))
        .collect();
    assert_eq!(msgs.len(), 3);
    assert!(msgs[0].starts_with("2: invalid JSON"), "{msgs:?}");
    assert_eq!(msgs[1], "3: missing field `reviews`");
    assert_eq!(
        msgs[2],
        "4: `reviews` is empty: a product needs at least one review"
    );
}

#[test]
fn dataset_and_tokenizer_stages_run_and_rerun_nothing() {
    let s = Sandbox::new("dataset-stage");
    let data_dir = data("");
    s.experiment(&format!(
        r#"
stage "prefs" kind="dataset" {{
    source "opinpref" path="{d}/opinpref"
    split "validation"
}}
stage "amazon" kind="dataset" {{
    source "copycat-amazon"
    path "{d}/copycat_amazon"
    limit 10
    shuffle #true
}}
stage "bad" kind="dataset" {{
    source "opinpref" path="{f}"
    strict #false
}}
stage "tok" kind="tokenizer" {{
    input "prefs" "amazon"
    vocab-size 600
}}
"#,
        d = data_dir.display(),
        f = fixture("opinpref-corrupt-valid.jsonl").display()
    ));
    let out = s.ok(&["run", "exp.kdl", "--json"]);
    let ev = events(&out);
    assert_eq!(
        with_event(&ev, "stage-done"),
        ["amazon", "bad", "prefs", "tok"]
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
    let m = |i: usize, k: &str| v["stages"][i]["metrics"][k].as_f64().unwrap();
    assert_eq!(
        (m(0, "products"), m(0, "pairs"), m(0, "split.validation")),
        (140.0, 140.0, 140.0)
    );
    assert_eq!(m(1, "products"), 10.0);
    assert_eq!((m(2, "products"), m(2, "skipped")), (2.0, 3.0));
    assert_eq!(m(3, "vocab_size"), 600.0);
    assert_eq!(m(3, "roundtrip"), 1.0);
    // Second run: nothing runs.
    let ev = s.run_events(&[]);
    assert_eq!(with_event(&ev, "stage-cached").len(), 4);
    assert!(with_event(&ev, "stage-done").is_empty());
    // A strict stage on the corrupted file fails naming the file and line.
    s.experiment(&format!(
        "stage \"bad\" kind=\"dataset\" {{\n    source \"opinpref\" path=\"{}\"\n}}\n",
        fixture("opinpref-corrupt-valid.jsonl").display()
    ));
    let out = s.run(&["run", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opinpref-corrupt-valid.jsonl:2: invalid JSON"),
        "{err}"
    );
    // An unknown source is caught before anything runs, with a suggestion.
    s.experiment(
        "stage \"d\" kind=\"dataset\" {\n    source \"opinprf\"\n    path \"exp.kdl\"\n}\n",
    );
    let out = s.run(&["plan", "exp.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`opinprf` is not one of") && err.contains("exp.kdl:6:12"),
        "{err}"
    );
}
