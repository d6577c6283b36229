//! The Llama family against Hugging Face `transformers`: the fixture in
//! tests/fixtures/causal was made by `make_causal_fixture.py` (three tiny
//! random models, `LlamaForCausalLM` with llama3 RoPE and tied embeddings,
//! `Qwen2ForCausalLM` with q/k/v biases, untied and sharded,
//! `Qwen3ForCausalLM` with q/k norms and a head_dim that is not
//! hidden/heads; their logits, greedy and beam outputs and eight AdamW
//! steps, recorded with transformers 5.25 / torch 2.15).
#![allow(clippy::print_stderr)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use efrlhf::ml::causal::{CausalLm, Inputs, generate, io};
use efrlhf::ml::decoding::{EarlyStopping, GenerateOptions};
use efrlhf::ml::to_vec;
use efrlhf::rng::Rng;
use serde_json::Value;

const ARCHS: [&str; 3] = ["llama", "qwen2", "qwen3"];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/causal")
}

fn device() -> Device {
    efrlhf::ml::device(None, 0).unwrap()
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

/// The logits transformers recorded, by name: (shape, values).
fn reference() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    common::read_safetensors(&fixture().join("expected.safetensors"))
}

fn rows(e: &Value, arch: &str, key: &str) -> Vec<Vec<u32>> {
    serde_json::from_value(e[arch][key].clone()).unwrap()
}

fn load(arch: &str, dev: &Device) -> CausalLm {
    let (model, report) = io::load(&fixture().join(arch), dev).unwrap();
    assert!(report.unused.is_empty(), "{arch}: {:?}", report.unused);
    model
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_transformers_below_1e_4() {
    let dev = device();
    let e = expected();
    let refs = reference();
    for arch in ARCHS {
        let model = load(arch, &dev);
        let pad = model.config.pad_token_id.unwrap();
        let prompts = rows(&e, arch, "rows");
        for (i, row) in prompts.iter().enumerate() {
            let ours =
                to_vec(model.forward(&Inputs::left_padded(std::slice::from_ref(row), pad, &dev)));
            let (shape, theirs) = &refs[&format!("{arch}.row{i}")];
            assert_eq!(shape, &vec![row.len(), model.config.vocab_size]);
            let diff = max_diff(&ours, theirs);
            eprintln!("{arch} row {i}: max |logit difference| {diff:e}");
            assert!(diff < 1e-4, "{arch} row {i}: {diff}");
            let spread = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(
                spread > 1.0,
                "{arch}: logits too flat to compare ({spread})"
            );
        }
        // The left-padded batch, at its real tokens.
        let ours = to_vec(model.forward(&Inputs::left_padded(&prompts, pad, &dev)));
        let (shape, theirs) = &refs[&format!("{arch}.batch")];
        let (t, v) = (shape[1], shape[2]);
        let mut compared = 0;
        for (i, row) in prompts.iter().enumerate() {
            for j in t - row.len()..t {
                let at = (i * t + j) * v;
                let diff = max_diff(&ours[at..at + v], &theirs[at..at + v]);
                assert!(diff < 1e-4, "{arch} batch row {i} position {j}: {diff}");
                compared += 1;
            }
        }
        assert_eq!(compared, 21);
    }
}

fn greedy(max_new: usize) -> GenerateOptions {
    GenerateOptions::greedy(max_new)
}

#[test]
fn greedy_generation_matches_transformers_token_for_token() {
    let dev = device();
    let e = expected();
    let max_new = e["max_new_tokens"].as_u64().unwrap() as usize;
    for arch in ARCHS {
        let model = load(arch, &dev);
        let rules = model.config.token_rules(&model.generation);
        // The second EOS id comes from generation_config.json's list.
        let eos: Vec<u32> = serde_json::from_value(e[arch]["eos"].clone()).unwrap();
        assert_eq!(rules.eos, eos);
        let prompts = rows(&e, arch, "rows");
        let out = generate(
            &model,
            &prompts,
            &greedy(max_new),
            &rules,
            &mut Rng::new(0),
            &dev,
        );
        let tokens: Vec<Vec<u32>> = out.iter().map(|g| g.tokens.clone()).collect();
        assert_eq!(tokens, rows(&e, arch, "greedy"), "{arch}");
        // Row 0 stops at the second EOS id; the others run to the limit.
        assert!(out[0].finished, "{arch}");
        // A left-padded batch gives what each row gives alone.
        for (i, p) in prompts.iter().enumerate() {
            let alone = generate(
                &model,
                std::slice::from_ref(p),
                &greedy(max_new),
                &rules,
                &mut Rng::new(0),
                &dev,
            );
            assert_eq!(alone[0].tokens, tokens[i], "{arch} row {i} alone");
        }
    }
}

#[test]
fn beam_search_matches_transformers_token_for_token() {
    let dev = device();
    let e = expected();
    let max_new = e["max_new_tokens"].as_u64().unwrap() as usize;
    for arch in ARCHS {
        let model = load(arch, &dev);
        let rules = model.config.token_rules(&model.generation);
        let prompts = rows(&e, arch, "rows");
        for case in e[arch]["beam"].as_array().unwrap() {
            let opts = GenerateOptions {
                num_beams: case["num_beams"].as_u64().unwrap() as usize,
                length_penalty: case["length_penalty"].as_f64().unwrap(),
                early_stopping: match &case["early_stopping"] {
                    Value::Bool(true) => EarlyStopping::Done,
                    Value::Bool(false) => EarlyStopping::Heuristic,
                    _ => EarlyStopping::Never,
                },
                ..greedy(max_new)
            };
            let out = generate(&model, &prompts, &opts, &rules, &mut Rng::new(0), &dev);
            let tokens: Vec<Vec<u32>> = out.iter().map(|g| g.tokens.clone()).collect();
            let theirs: Vec<Vec<u32>> = serde_json::from_value(case["tokens"].clone()).unwrap();
            assert_eq!(tokens, theirs, "{arch} {case}");
        }
    }
}

#[test]
fn eight_adamw_steps_match_pytorch() {
    // Completion-only loss (transformers: right-padded prompt + completion
    // rows, labels -100 on the prompt; here through the stages' seam, the
    // prompts left-padded), full batch, AdamW(lr 1e-3, weight decay 0.01,
    // eps 1e-8) as torch's.
    use efrlhf::ml::lm::{LanguageModel, cross_entropy};
    let dev = device();
    let e = expected();
    let train_dev = dev.clone().autodiff();
    for arch in ARCHS {
        let t = &e[arch]["train"];
        let seqs: Vec<Vec<u32>> = serde_json::from_value(t["sequences"].clone()).unwrap();
        let prompt: Vec<usize> = serde_json::from_value(t["prompt_lengths"].clone()).unwrap();
        let losses: Vec<f64> = serde_json::from_value(t["losses"].clone()).unwrap();
        let mut model = load(arch, &dev).fork(&train_dev).train();
        let sources: Vec<Vec<u32>> = seqs
            .iter()
            .zip(&prompt)
            .map(|(s, &p)| s[..p].to_vec())
            .collect();
        let responses: Vec<Vec<u32>> = seqs
            .iter()
            .zip(&prompt)
            .map(|(s, &p)| s[p..].to_vec())
            .collect();
        let mut optim = AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_epsilon(1e-8)
            .init();
        for (step, theirs) in losses.iter().enumerate() {
            let (hidden, labels) = model.response_hidden(&sources, &responses, &train_dev);
            let loss = cross_entropy(LanguageModel::logits(&model, hidden), &labels);
            let ours = to_vec(loss.clone())[0] as f64;
            eprintln!("{arch} step {step}: {ours} vs {theirs}");
            assert!(
                (ours - theirs).abs() < 1e-5,
                "{arch} step {step}: {ours} vs {theirs}"
            );
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        // It learned: the loss fell by more than 1.5 nats in PyTorch.
        assert!(losses[7] < losses[0] - 1.5, "{arch}: {losses:?}");
        let _ = model.valid();
    }
}

/// The tensors of a saved folder (one file or shards), by name, as raw bytes.
fn tensors(dir: &std::path::Path) -> HashMap<String, (Vec<usize>, Vec<u8>)> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, view) in st.tensors() {
                out.insert(name, (view.shape().to_vec(), view.data().to_vec()));
            }
        }
    }
    out
}

#[test]
fn saved_folders_hold_what_transformers_saved() {
    // A tied model's file has no lm_head.weight, an untied one has it; the
    // sharded Qwen2 checkpoint saves as one file with the same tensors.
    let dev = device();
    for arch in ARCHS {
        let model = load(arch, &dev);
        let dir = std::env::temp_dir().join(format!("efrlhf-causal-{arch}-{}", std::process::id()));
        io::save(&model, &dir).unwrap();
        let ours = tensors(&dir);
        let theirs = tensors(&fixture().join(arch));
        let mut names: Vec<&String> = ours.keys().collect();
        names.sort();
        let mut expected_names: Vec<&String> = theirs.keys().collect();
        expected_names.sort();
        assert_eq!(names, expected_names, "{arch}");
        assert_eq!(ours.contains_key("lm_head.weight"), arch == "qwen2");
        for n in names {
            assert_eq!(ours[n], theirs[n], "{arch} {n}");
        }
        // config.json reads back to the same architecture.
        let back = io::read_config(&dir).unwrap();
        assert_eq!(back, {
            let mut c = model.config.clone();
            c.raw = back.raw.clone();
            c
        });
        let reloaded = io::load(&dir, &dev).unwrap().0;
        let row = vec![5u32, 9, 17, 33];
        let pad = model.config.pad_token_id.unwrap();
        let a = to_vec(model.forward(&Inputs::left_padded(std::slice::from_ref(&row), pad, &dev)));
        let b = to_vec(reloaded.forward(&Inputs::left_padded(&[row], pad, &dev)));
        assert_eq!(a, b, "{arch}");
        // EFRLHF_CAUSAL_EXPORT keeps the folders for make_causal_fixture.py --check.
        if std::env::var_os("EFRLHF_CAUSAL_EXPORT").is_none() {
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    // transformers loaded folders saved here: see reload_*.json.
    for arch in ["llama", "qwen2"] {
        let recorded: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture().join(format!("reload_{arch}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(recorded["greedy_identical"], true, "{arch}");
        assert!(
            recorded["max_abs_logit_diff"].as_f64().unwrap() < 1e-6,
            "{arch}"
        );
    }
}

#[test]
fn a_bf16_checkpoint_loads_exactly_widened() {
    let dev = device();
    let e = expected();
    let model = load("llama-bf16", &dev);
    let row = rows(&e, "llama", "rows")[1].clone();
    let ours = to_vec(model.forward(&Inputs::left_padded(&[row], 1, &dev)));
    let (_, theirs) = &reference()["llama-bf16.row1"];
    let diff = max_diff(&ours, theirs);
    assert!(diff < 1e-4, "{diff}");
    // And it is not the f32 model: the rounding shows.
    let (_, f32_logits) = &reference()["llama.row1"];
    assert!(max_diff(&ours, f32_logits) > 1e-4);
}

#[test]
fn a_checkpoint_that_does_not_match_its_config_names_the_tensor_and_both_shapes() {
    let dir = std::env::temp_dir().join(format!("efrlhf-causal-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture().join("qwen3");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 37", "\"intermediate_size\": 40");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = io::load(&dir, &device()).unwrap_err();
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("[37, 64]")
            && err.contains("[40, 64]"),
        "{err}"
    );
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("Qwen3ForCausalLM", "GPTNeoXForCausalLM")
        .replace("\"qwen3\"", "\"gpt_neox\"");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = io::load(&dir, &device()).unwrap_err();
    assert!(
        err.contains("`GPTNeoXForCausalLM` is not supported")
            && err.contains("LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_stage_seam_scores_what_generation_and_transformers_compute() {
    use efrlhf::ml::lm::{LanguageModel, cross_entropy};
    let dev = device();
    let e = expected();
    for arch in ARCHS {
        let model = load(arch, &dev);
        // Teacher-forced on (prompt, greedy continuation), left-padded
        // prompts of different lengths: each position's argmax is the token
        // greedy decoding picked there.
        let prompts = rows(&e, arch, "rows");
        let greedy = rows(&e, arch, "greedy");
        let (hidden, labels) = model.response_hidden(&prompts, &greedy, &dev);
        let logits = to_vec(LanguageModel::logits(&model, hidden));
        let (t, v) = (labels.ids.dims()[1], model.config.vocab_size);
        for (i, g) in greedy.iter().enumerate() {
            for (j, &token) in g.iter().enumerate() {
                let row = &logits[(i * t + j) * v..(i * t + j + 1) * v];
                let best = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)));
                assert_eq!(best, Some(token as usize), "{arch} row {i} token {j}");
            }
        }
        // SFT's loss through the seam (prompt = each sequence's first part,
        // response = the rest) is transformers' completion-only loss.
        let t = &e[arch]["train"];
        let seqs: Vec<Vec<u32>> = serde_json::from_value(t["sequences"].clone()).unwrap();
        let prompt: Vec<usize> = serde_json::from_value(t["prompt_lengths"].clone()).unwrap();
        let theirs = t["losses"][0].as_f64().unwrap();
        let sources: Vec<Vec<u32>> = seqs
            .iter()
            .zip(&prompt)
            .map(|(s, &p)| s[..p].to_vec())
            .collect();
        let responses: Vec<Vec<u32>> = seqs
            .iter()
            .zip(&prompt)
            .map(|(s, &p)| s[p..].to_vec())
            .collect();
        let (hidden, labels) = model.response_hidden(&sources, &responses, &dev);
        let ours = to_vec(cross_entropy(
            LanguageModel::logits(&model, hidden),
            &labels,
        ))[0] as f64;
        assert!((ours - theirs).abs() < 1e-5, "{arch}: {ours} vs {theirs}");
    }
}

#[test]
fn a_reward_model_scores_as_transformers_sequence_classification() {
    use efrlhf::ml::causal::reward::CausalRm;
    let dev = device();
    let e = expected();
    let dir = fixture().join("qwen2-rm");
    let rm = CausalRm::load(&dir, &dev).unwrap();
    let rows = rows(&e, "qwen2-rm", "rows");
    let theirs: Vec<f32> = serde_json::from_value(e["qwen2-rm"]["scores"].clone()).unwrap();
    let ours = rm.score_rows(&rows, 8, &dev);
    let diff = max_diff(&ours, &theirs);
    assert!(diff < 1e-4, "{ours:?} vs {theirs:?}");
    // Saved here, it is the same folder: same tensors, sequence-classification config.
    let out = std::env::temp_dir().join(format!("efrlhf-causal-rm-{}", std::process::id()));
    rm.save(&out).unwrap();
    assert_eq!(tensors(&out), tensors(&dir));
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        config.contains("\"Qwen2ForSequenceClassification\""),
        "{config}"
    );
    let back = CausalRm::load(&out, &dev).unwrap();
    assert_eq!(back.score_rows(&rows, 8, &dev), ours);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn half_precision_compute_keeps_norms_and_softmax_in_f32() {
    // bf16 weights and activations, RMSNorm and the attention softmax in
    // f32 (as transformers under autocast): the logits stay close to f32's.
    use efrlhf::ml::precision::Precision;
    let dev = device();
    let e = expected();
    for arch in ARCHS {
        let model = load(arch, &dev);
        let rows = rows(&e, arch, "rows");
        let pad = model.config.pad_token_id.unwrap();
        let inputs = Inputs::left_padded(&rows, pad, &dev);
        let full = to_vec(model.forward(&inputs));
        let half = to_vec(Precision::Bf16.compute(&model).forward(&inputs));
        assert!(half.iter().all(|x| x.is_finite()), "{arch}");
        // At real tokens: the mean |difference| is a small share of the logits' spread.
        let (t, v) = (inputs.ids.dims()[1], model.config.vocab_size);
        let (mut diff, mut spread, mut n) = (0.0f64, 0.0f64, 0.0f64);
        for (i, r) in rows.iter().enumerate() {
            for j in t - r.len()..t {
                let at = (i * t + j) * v;
                for k in at..at + v {
                    diff += (full[k] - half[k]).abs() as f64;
                    spread += full[k].abs() as f64;
                    n += 1.0;
                }
            }
        }
        eprintln!(
            "{arch}: bf16 mean |difference| {} against mean |logit| {}",
            diff / n,
            spread / n
        );
        assert!(
            diff < 0.05 * spread,
            "{arch}: {} against {}",
            diff / n,
            spread / n
        );
    }
}
