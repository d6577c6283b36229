//! The built-in kinds' identity is derived from their source: over a fixture
//! tree, a change in a module a kind reaches changes its identity and a
//! change anywhere else (or a comment, layout or test change) does not; over
//! the real tree, each kind reaches exactly the pinned modules, so a new
//! `use` cannot escape the digest unnoticed.

#[allow(dead_code)]
#[path = "../build/identity.rs"]
mod identity;

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use identity::{Lock, SourceTree, identity, scan};

const LOCK: &str = r#"
version = 4

[[package]]
name = "fx"
version = "0.1.0"
dependencies = [
 "numbers",
 "words",
]

[[package]]
name = "numbers"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aaaa"
dependencies = [
 "core-math 2.0.0",
]

[[package]]
name = "core-math"
version = "2.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "bbbb"

[[package]]
name = "core-math"
version = "3.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "cccc"

[[package]]
name = "words"
version = "0.5.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "dddd"
"#;

/// A small crate: two kinds, a helper one of them uses, an unrelated module.
fn fixture(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("identity-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let files = [
        (
            "src/lib.rs",
            "pub mod helpers;\npub mod unrelated;\npub mod stages;\n",
        ),
        ("src/main.rs", "fn main() { fx::helpers::scale(1.0); }\n"),
        (
            "src/helpers/mod.rs",
            "//! Helpers.\nmod inner;\npub use inner::Scaled;\n\n/// Scales.\npub fn scale(x: f64) -> f64 {\n    x * 2.0\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n",
        ),
        (
            "src/helpers/inner.rs",
            "pub struct Scaled(pub f64);\nimpl Scaled {\n    pub fn get(&self) -> f64 { self.0 }\n}\n",
        ),
        ("src/unrelated.rs", "pub fn nothing() {}\n"),
        (
            "src/stages/mod.rs",
            "pub mod one;\npub mod two;\npub mod kind;\n",
        ),
        ("src/stages/kind.rs", "pub trait Kind {}\n"),
        (
            "src/stages/one.rs",
            "use crate::helpers::{self, Scaled};\nuse super::kind::Kind;\npub struct One;\nimpl Kind for One {}\npub fn run() -> f64 {\n    numbers::add(helpers::scale(1.0), Scaled(2.0).get())\n}\npub const PROMPT: &str = include_str!(\"../../prompt.txt\");\n",
        ),
        (
            "src/stages/two.rs",
            "pub struct Two;\nimpl crate::stages::kind::Kind for Two {}\npub fn run() -> String {\n    words::upper(\"x\")\n}\n",
        ),
        ("prompt.txt", "Rate the summary.\n"),
    ];
    for (rel, text) in files {
        write(&dir, rel, text);
    }
    dir
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn crates() -> BTreeSet<String> {
    ["numbers", "words"].map(String::from).into()
}

fn digests(dir: &Path, lock: &str) -> (String, String) {
    let tree = scan(dir, &crates()).unwrap();
    let lock = Lock::parse(lock);
    let one = identity(&tree, &lock, "fx", "stages::one").unwrap();
    let two = identity(&tree, &lock, "fx", "stages::two").unwrap();
    (one.digest, two.digest)
}

fn edit(dir: &Path, rel: &str, from: &str, to: &str) {
    let p = dir.join(rel);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    std::fs::write(p, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_kind_reaches_what_its_paths_name_and_nothing_else() {
    let dir = fixture("closure");
    let tree = scan(&dir, &crates()).unwrap();
    let lock = Lock::parse(LOCK);
    let one = identity(&tree, &lock, "fx", "stages::one").unwrap();
    let files: Vec<&str> = one
        .files
        .iter()
        .map(|f| f.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "prompt.txt",
            "src/helpers/inner.rs",
            "src/helpers/mod.rs",
            "src/stages/kind.rs",
            "src/stages/one.rs"
        ]
    );
    // `numbers` and what it depends on, at the version it locks (not core-math 3).
    assert_eq!(one.crates, ["core-math 2.0.0", "numbers 1.0.0"]);
    let two = identity(&tree, &lock, "fx", "stages::two").unwrap();
    let files: Vec<&str> = two
        .files
        .iter()
        .map(|f| f.split(' ').next().unwrap())
        .collect();
    assert_eq!(files, ["src/stages/kind.rs", "src/stages/two.rs"]);
    assert_eq!(two.crates, ["words 0.5.0"]);
    assert!(
        !tree.modules.contains_key("main"),
        "the binary is no kind's code"
    );
}

#[test]
fn a_change_in_a_used_module_changes_the_identity_and_elsewhere_does_not() {
    let dir = fixture("directions");
    let (one, two) = digests(&dir, LOCK);
    // A used module, two levels down (reached through a re-export).
    edit(&dir, "src/helpers/inner.rs", "self.0", "self.0 + 1.0");
    let (one2, two2) = digests(&dir, LOCK);
    assert_ne!(one, one2, "stages::one uses helpers::inner");
    assert_eq!(two, two2, "stages::two does not");
    // A module no kind uses, and the binary's entry point.
    edit(&dir, "src/unrelated.rs", "{}", "{ let _ = 1; }");
    edit(&dir, "src/main.rs", "1.0", "2.0");
    assert_eq!(digests(&dir, LOCK), (one2.clone(), two2.clone()));
    // An embedded file is part of the module that embeds it.
    edit(&dir, "prompt.txt", "Rate", "Score");
    let (one3, two3) = digests(&dir, LOCK);
    assert_ne!(one2, one3);
    assert_eq!(two2, two3);
    // A locked crate's version: only the kind that names it (or a dependency of it).
    let bumped = LOCK.replace(
        "name = \"words\"\nversion = \"0.5.0\"",
        "name = \"words\"\nversion = \"0.5.1\"",
    );
    let (one4, two4) = digests(&dir, &bumped);
    assert_eq!(one4, one3);
    assert_ne!(two4, two3);
    let deeper = LOCK.replace("checksum = \"bbbb\"", "checksum = \"bbbc\"");
    assert_ne!(
        digests(&dir, &deeper).0,
        one3,
        "a dependency of a named crate counts"
    );
}

#[test]
fn comments_layout_docs_and_tests_change_nothing() {
    let dir = fixture("noise");
    let before = digests(&dir, LOCK);
    edit(
        &dir,
        "src/helpers/mod.rs",
        "/// Scales.",
        "/// Doubles its input.\n// and a comment",
    );
    edit(
        &dir,
        "src/helpers/mod.rs",
        "x * 2.0",
        "x\n        *   2.0 /* inline */",
    );
    edit(
        &dir,
        "src/helpers/mod.rs",
        "fn t() {}",
        "fn t() { assert_eq!(1, 1); }",
    );
    edit(
        &dir,
        "src/stages/one.rs",
        "pub struct One;",
        "/// The first kind.\n\npub   struct One ;",
    );
    assert_eq!(digests(&dir, LOCK), before);
    // A real change in the same file is seen.
    edit(&dir, "src/helpers/mod.rs", "2.0", "3.0");
    assert_ne!(digests(&dir, LOCK).0, before.0);
}

#[test]
fn an_impl_away_from_its_type_and_trait_is_reported() {
    let dir = fixture("impls");
    let tree = scan(&dir, &crates()).unwrap();
    assert!(tree.misplaced_impls().is_empty());
    // Methods added to `Scaled` from a module nothing reaches through paths.
    edit(
        &dir,
        "src/unrelated.rs",
        "pub fn nothing() {}",
        "impl crate::helpers::Scaled {\n    pub fn twice(&self) -> f64 { self.0 * 2.0 }\n}\nfn f() -> impl Iterator<Item = u8> { std::iter::empty() }\n",
    );
    let tree = scan(&dir, &crates()).unwrap();
    assert_eq!(
        tree.misplaced_impls(),
        [("unrelated".to_string(), None, "Scaled".to_string())]
    );
}

/// What each built-in kind's results are computed by. Adding a `use` to a
/// kind (or to anything it reaches) changes this list on purpose: the test
/// fails until the list says so.
const PINNED: &[(&str, &[&str])] = &[
    (
        "stages::dataset",
        &[
            "src/rng.rs",
            "src/stages/dataset/mod.rs",
            "src/stages/dataset/sources.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/kind.rs",
        ],
    ),
    (
        "stages::tokenizer",
        &[
            "src/stages/formats/dataset.rs",
            "src/stages/kind.rs",
            "src/stages/tokenizer.rs",
        ],
    ),
    (
        "stages::reward",
        &[
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/bt.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/reward.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/phi.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/schedule.rs",
            "src/ml/text_rm.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/reward.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/kind.rs",
            "src/stages/reward.rs",
            "src/text/chat.rs",
        ],
    ),
    (
        "stages::featurize",
        &[
            "plugins/judge/aspect-coverage.txt",
            "plugins/judge/conciseness.txt",
            "plugins/judge/hallucination.txt",
            "plugins/judge/language-correctness.txt",
            "plugins/judge/opinion-coverage.txt",
            "plugins/judge/opinion-faithfulness.txt",
            "plugins/judge/relevance.txt",
            "src/ml/alloc.rs",
            "src/ml/mod.rs",
            "src/ml/schedule.rs",
            "src/rng.rs",
            "src/stages/featurize/distill.rs",
            "src/stages/featurize/judge.rs",
            "src/stages/featurize/mod.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/kind.rs",
            "src/stats.rs",
            "src/text/lexical.rs",
            "src/text/llm.rs",
        ],
    ),
    (
        "stages::sft",
        &[
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/schedule.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/formats/adapter.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/kind.rs",
            "src/stages/sft.rs",
            "src/text/chat.rs",
            "src/text/rouge.rs",
        ],
    ),
    (
        "stages::ppo",
        &[
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/bt.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/reward.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/phi.rs",
            "src/ml/ppo.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/rlhf.rs",
            "src/ml/schedule.rs",
            "src/ml/text_rm.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/formats/adapter.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/reward.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/kind.rs",
            "src/stages/ppo.rs",
            "src/stats.rs",
            "src/text/chat.rs",
            "src/text/lexical.rs",
        ],
    ),
    (
        "stages::eval",
        &[
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/bt.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/reward.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/phi.rs",
            "src/ml/ppo.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/rlhf.rs",
            "src/ml/schedule.rs",
            "src/ml/text_rm.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/eval.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/reward.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/kind.rs",
            "src/stats.rs",
            "src/text/chat.rs",
            "src/text/lexical.rs",
            "src/text/rouge.rs",
        ],
    ),
    (
        "stages::preference",
        &[
            "plugins/judge/pairwise.txt",
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/bt.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/reward.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/phi.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/schedule.rs",
            "src/ml/text_rm.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/evaluation.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/reward.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/kind.rs",
            "src/stages/preference.rs",
            "src/stats.rs",
            "src/text/chat.rs",
            "src/text/lexical.rs",
            "src/text/llm.rs",
        ],
    ),
    (
        "stages::dpo",
        &[
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/dpo.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/schedule.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/dpo.rs",
            "src/stages/formats/adapter.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/kind.rs",
            "src/text/chat.rs",
        ],
    ),
    (
        "stages::grpo",
        &[
            "src/ml/alloc.rs",
            "src/ml/bart/config.rs",
            "src/ml/bart/generate.rs",
            "src/ml/bart/generation_config.rs",
            "src/ml/bart/io.rs",
            "src/ml/bart/mod.rs",
            "src/ml/bart/model.rs",
            "src/ml/beam.rs",
            "src/ml/bt.rs",
            "src/ml/causal/config.rs",
            "src/ml/causal/generate.rs",
            "src/ml/causal/io.rs",
            "src/ml/causal/mod.rs",
            "src/ml/causal/model.rs",
            "src/ml/causal/reward.rs",
            "src/ml/causal/rope.rs",
            "src/ml/checkpoint.rs",
            "src/ml/decoding.rs",
            "src/ml/fused/gemm.rs",
            "src/ml/fused/kernels.rs",
            "src/ml/fused/math.rs",
            "src/ml/fused/mod.rs",
            "src/ml/fused/ops.rs",
            "src/ml/grpo.rs",
            "src/ml/grpo_step.rs",
            "src/ml/lm.rs",
            "src/ml/lora.rs",
            "src/ml/mod.rs",
            "src/ml/peft.rs",
            "src/ml/phi.rs",
            "src/ml/ppo.rs",
            "src/ml/precision.rs",
            "src/ml/recompute.rs",
            "src/ml/rlhf.rs",
            "src/ml/schedule.rs",
            "src/ml/text_rm.rs",
            "src/ml/train.rs",
            "src/rng.rs",
            "src/stages/formats/adapter.rs",
            "src/stages/formats/dataset.rs",
            "src/stages/formats/model.rs",
            "src/stages/formats/prompt.rs",
            "src/stages/formats/reward.rs",
            "src/stages/formats/tokenizer.rs",
            "src/stages/grpo.rs",
            "src/stages/kind.rs",
            "src/stats.rs",
            "src/text/chat.rs",
            "src/text/lexical.rs",
        ],
    ),
];

fn real_tree() -> (SourceTree, Lock) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = Lock::parse(&std::fs::read_to_string(root.join("Cargo.lock")).unwrap());
    let crates: BTreeSet<String> = lock.direct("efrlhf").keys().cloned().collect();
    (scan(root, &crates).unwrap(), lock)
}

fn files_of(tree: &SourceTree, lock: &Lock, module: &str) -> Vec<String> {
    identity(tree, lock, "efrlhf", module)
        .unwrap()
        .files
        .iter()
        .map(|f| f.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn each_builtin_kind_reaches_exactly_its_pinned_modules() {
    let (tree, lock) = real_tree();
    for (module, pinned) in PINNED {
        assert_eq!(
            files_of(&tree, &lock, module),
            *pinned,
            "the code `{module}` reaches changed: update PINNED if that is intended"
        );
    }
    assert!(
        tree.misplaced_impls().is_empty(),
        "impl blocks away from their type and trait escape the module graph: {:?}",
        tree.misplaced_impls()
    );
}

#[test]
fn lexical_reaches_the_kinds_that_score_text_and_the_engine_reaches_none() {
    let (tree, lock) = real_tree();
    let reaches =
        |module: &str, file: &str| files_of(&tree, &lock, module).iter().any(|f| f == file);
    for kind in [
        "stages::featurize",
        "stages::ppo",
        "stages::grpo",
        "stages::eval",
        "stages::preference",
    ] {
        assert!(reaches(kind, "src/text/lexical.rs"), "{kind}");
    }
    for kind in [
        "stages::dataset",
        "stages::tokenizer",
        "stages::sft",
        "stages::dpo",
    ] {
        assert!(!reaches(kind, "src/text/lexical.rs"), "{kind}");
    }
    for (module, _) in PINNED {
        for f in files_of(&tree, &lock, module) {
            for engine in [
                "src/cli/",
                "src/ops/",
                "src/report/",
                "src/exec/",
                "src/cache/",
                "src/graph/",
                "src/dsl/",
                "src/lib.rs",
                "src/stages/builtins.rs",
            ] {
                assert!(!f.starts_with(engine), "{module} reaches {f}");
            }
        }
    }
}

#[test]
fn the_binary_carries_the_same_distinct_identities_and_plugins_shows_them() {
    let (tree, lock) = real_tree();
    let s = common::Sandbox::new("identity-plugins");
    let mut seen = BTreeSet::new();
    for (kind, module) in [
        ("dataset", "stages::dataset"),
        ("tokenizer", "stages::tokenizer"),
        ("reward-model", "stages::reward"),
        ("featurize", "stages::featurize"),
        ("sft", "stages::sft"),
        ("ppo", "stages::ppo"),
        ("eval", "stages::eval"),
    ] {
        let digest = identity(&tree, &lock, "efrlhf", module).unwrap().digest;
        assert!(seen.insert(digest.clone()), "{kind} shares an identity");
        let doc = s.ok(&["plugins", kind]);
        assert!(
            doc.contains(&format!("identity: {}", &digest[..16])),
            "`plugins {kind}` does not show the identity {digest} derived from this tree:\n{doc}"
        );
        assert!(
            doc.contains(&format!("src/{}", module.replace("::", "/"))),
            "{doc}"
        );
    }
}
