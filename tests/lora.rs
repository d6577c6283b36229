//! LoRA against PEFT (tests/fixtures/lora/make_lora_fixture.py): adapters
//! PEFT made load here with PEFT's logits, adapters written here load in
//! PEFT with ours, merging equals base plus adapter, and the base with the
//! adapters dropped is the base.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use efrlhf::ml::lm::{self, LanguageModel};
use efrlhf::ml::lora::{self, LoraSpec, Projections, Targets};
use efrlhf::ml::peft::{self, Base};
use efrlhf::ml::to_vec;
use efrlhf::rng::Rng;

const ARCHS: [&str; 4] = ["bart", "llama", "qwen2", "qwen3"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn base_dir(arch: &str) -> PathBuf {
    match arch {
        "bart" => fixtures().join("bart/tiny"),
        a => fixtures().join("causal").join(a),
    }
}

fn device() -> Device {
    efrlhf::ml::device(None, 0).unwrap()
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn read_tensors(path: &Path) -> Tensors {
    common::read_safetensors(path)
}

fn expected() -> Tensors {
    read_tensors(&fixtures().join("lora/expected.safetensors"))
}

fn rows() -> (Vec<u32>, Vec<u32>) {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("lora/expected.json")).unwrap(),
    )
    .unwrap();
    (
        serde_json::from_value(v["source"].clone()).unwrap(),
        serde_json::from_value(v["response"].clone()).unwrap(),
    )
}

/// The logits that predict the response after the source.
fn response_logits<M: LanguageModel>(m: &M, dev: &Device) -> Vec<f32> {
    let (source, response) = rows();
    let (hidden, _) = m.response_hidden(&[source], &[response], dev);
    to_vec(m.logits(hidden))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs a check on the base model of `arch`, whatever its family.
trait Check {
    fn check<M: LanguageModel>(&self, arch: &str, base: M);
}

struct Run<'a, C>(&'a str, &'a C);

impl<C: Check> lm::WithModel for Run<'_, C> {
    type Output = ();
    fn run<M: LanguageModel>(self, model: M, _unused: Vec<String>) {
        self.1.check(self.0, model);
    }
}

fn each_family(c: &impl Check) {
    for arch in ARCHS {
        lm::load(&base_dir(arch), &device(), Run(arch, c)).unwrap();
    }
}

struct PeftMade;

impl Check for PeftMade {
    fn check<M: LanguageModel>(&self, arch: &str, base: M) {
        let dev = device();
        let e = expected();
        let dir = fixtures().join(format!("lora/peft_{arch}"));
        let (config, tensors) = peft::read(&dir).unwrap();
        let (adapted, trained) = lora::attach_peft(base.clone(), tensors, &config, &dev).unwrap();
        assert!(trained > 0);
        let ours = response_logits(&adapted, &dev);
        let theirs = &e[&format!("{arch}.peft")].1;
        let d = max_diff(&ours, theirs);
        assert!(d < 1e-4, "{arch}: base + adapter differs from PEFT by {d}");
        // The adapter changes the logits: the comparison is not of the base with itself.
        let plain = &e[&format!("{arch}.base")].1;
        assert!(max_diff(theirs, plain) > 1e-3, "{arch}");
        // Merged, as PEFT's merge_and_unload.
        let merged = lora::merge(adapted.clone());
        assert!(!lora::has_adapters(&merged));
        let d = max_diff(
            &response_logits(&merged, &dev),
            &e[&format!("{arch}.merged")].1,
        );
        assert!(d < 1e-4, "{arch}: merged differs from PEFT's by {d}");
        // With the adapters dropped, the base again (PPO's reference).
        let off = lora::base_of(&adapted);
        let d = max_diff(&response_logits(&off, &dev), plain);
        assert!(
            d < 1e-4,
            "{arch}: adapters off differs from the base by {d}"
        );
        let d = max_diff(&response_logits(&off, &dev), &response_logits(&base, &dev));
        assert_eq!(d, 0.0, "{arch}");
    }
}

#[test]
fn adapters_peft_made_load_with_peft_logits_merged_or_not() {
    each_family(&PeftMade);
}

/// What tests/lora.rs writes for PEFT to load (see `make_lora_fixture.py --check`).
fn spec(arch: &str) -> LoraSpec {
    LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: match arch {
            "bart" => Targets::parse("q_proj out_proj fc2"),
            "llama" => Targets::parse("all-linear"),
            _ => Targets::parse(""),
        },
    }
}

/// Fills each adapter's B from `seed` (a fresh one is zero, which would
/// show nothing), on the host so every CPU writes the same bits.
fn randomize_b<M: Projections>(mut model: M, seed: u64, dev: &Device) -> M {
    let mut rng = Rng::new(seed);
    for (_, p) in model.projections() {
        if let Some(ad) = &mut p.lora {
            let [r, out] = ad.b.val().dims();
            let v: Vec<f32> = (0..r * out)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32 * 0.5)
                .collect();
            ad.b = Param::from_tensor(Tensor::from_data(TensorData::new(v, [r, out]), dev));
        }
    }
    model
}

struct WrittenHere(PathBuf);

impl Check for WrittenHere {
    fn check<M: LanguageModel>(&self, arch: &str, base: M) {
        let dev = device();
        let e = expected();
        let spec = spec(arch);
        let (adapted, _) = lora::attach(base, &spec, 7).unwrap();
        let adapted = randomize_b(adapted, 11, &dev);
        let dir = self.0.join(arch);
        let folder = Base::of_folder(&base_dir(arch)).unwrap();
        lm::save_adapter(&adapted, &dir, &folder).unwrap();
        let ours = response_logits(&adapted, &dev);
        if std::env::var_os("EFRLHF_LORA_EXPORT").is_some() {
            return;
        }
        // The adapter PEFT loaded is this one, bit for bit...
        let written = read_tensors(&dir.join("adapter_model.safetensors"));
        let recorded = read_tensors(&fixtures().join("lora/efrlhf_adapters.safetensors"));
        let mine: Vec<_> = recorded
            .keys()
            .filter(|k| k.starts_with(&format!("{arch}/")))
            .collect();
        assert_eq!(mine.len(), written.len(), "{arch}");
        for (k, v) in &written {
            assert_eq!(&recorded[&format!("{arch}/{k}")], v, "{arch}: {k}");
        }
        // ...it changes the logits (PEFT would have said nothing had its keys not matched)...
        assert!(
            max_diff(&ours, &e[&format!("{arch}.base")].1) > 1e-3,
            "{arch}"
        );
        // ...and PEFT's logits with it are ours.
        let d = max_diff(&ours, &e[&format!("{arch}.efrlhf")].1);
        assert!(
            d < 1e-4,
            "{arch}: PEFT's logits differ from efrlhf's by {d}"
        );
        // efrlhf loads the folder too (merged onto the base it names).
        let reloaded = lm::load(&dir, &dev, Logits).unwrap();
        let d = max_diff(&ours, &reloaded);
        assert!(d < 1e-4, "{arch}: reloaded adapter differs by {d}");
        // The folder holds the adapter, not the base.
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["r"], 4);
        assert!(!dir.join("model.safetensors").exists());
    }
}

struct Logits;

impl lm::WithModel for Logits {
    type Output = Vec<f32>;
    fn run<M: LanguageModel>(self, model: M, _unused: Vec<String>) -> Vec<f32> {
        response_logits(&model, &device())
    }
}

#[test]
fn adapters_written_here_load_in_peft_with_our_logits() {
    let root = match std::env::var_os("EFRLHF_LORA_EXPORT") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("efrlhf-lora-{}", std::process::id())),
    };
    each_family(&WrittenHere(root.clone()));
    if std::env::var_os("EFRLHF_LORA_EXPORT").is_none() {
        std::fs::remove_dir_all(root).ok();
    }
}

struct Mismatch;

impl Check for Mismatch {
    fn check<M: LanguageModel>(&self, arch: &str, base: M) {
        // qwen2's adapter onto qwen3 (wider q_proj, other targets): the tensor is named.
        if arch != "qwen3" {
            return;
        }
        let (config, tensors) = peft::read(&fixtures().join("lora/peft_qwen2")).unwrap();
        let e = lora::attach_peft(base, tensors, &config, &device()).unwrap_err();
        assert!(
            e.contains("does not fit this base") && e.contains("model.layers.0.self_attn"),
            "{e}"
        );
    }
}

#[test]
fn an_adapter_of_another_base_names_the_tensor_that_does_not_fit() {
    each_family(&Mismatch);
}

#[test]
fn an_edited_base_is_refused_rather_than_adapted() {
    let dir = std::env::temp_dir().join(format!("efrlhf-lora-base-{}", std::process::id()));
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(base_dir("llama").join(f), base.join(f)).unwrap();
    }
    struct Save(PathBuf, PathBuf);
    impl lm::WithModel for Save {
        type Output = ();
        fn run<M: LanguageModel>(self, model: M, _: Vec<String>) {
            let spec = spec("llama");
            let (m, _) = lora::attach(model, &spec, 1).unwrap();
            let b = Base::of_folder(&self.0).unwrap();
            lm::save_adapter(&m, &self.1, &b).unwrap();
        }
    }
    let adapter = dir.join("adapter");
    lm::load(&base, &device(), Save(base.clone(), adapter.clone())).unwrap();
    assert!(lm::load(&adapter, &device(), Logits).is_ok());
    // Same size, one byte changed.
    let path = base.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let e = lm::load(&adapter, &device(), Logits).unwrap_err();
    assert!(
        e.contains("changed since the adapter was trained") && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The gradient of every trained parameter, by parameter id.
struct Grads(Vec<(burn::module::ParamId, Vec<f32>)>);

fn gradients_of<M: LanguageModel>(model: &M, dev: &Device) -> Grads {
    use burn::module::ModuleVisitor;
    let train = dev.clone().autodiff();
    let m = model.clone().fork(&train).train();
    let (source, response) = rows();
    let sources = vec![source.clone(), source[2..].to_vec()];
    let responses = vec![response.clone(), response[1..].to_vec()];
    let (hidden, labels) = m.response_hidden(&sources, &responses, &train);
    let loss = lm::cross_entropy(m.logits(hidden), &labels);
    let grads = efrlhf::ml::recompute::gradients(loss, &m);
    struct Collect<'a>(
        &'a burn::optim::GradientsParams,
        Vec<(burn::module::ParamId, Vec<f32>)>,
    );
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                let n: usize = g.dims().iter().product();
                self.1.push((param.id, to_vec(g.reshape([n]))));
            }
        }
    }
    let mut c = Collect(&grads, Vec::new());
    m.visit(&mut c);
    Grads(c.1)
}

struct Recomputed;

impl Check for Recomputed {
    fn check<M: LanguageModel>(&self, arch: &str, mut base: M) {
        let dev = device();
        base.set_dropout(0.0);
        for lora_on in [false, true] {
            let model = if lora_on {
                randomize_b(
                    lora::attach(base.clone(), &spec("llama"), 3).unwrap().0,
                    5,
                    &dev,
                )
            } else {
                base.clone()
            };
            let plain = gradients_of(&model, &dev);
            let mut ckpt = model.clone();
            ckpt.set_checkpointing(true);
            let replayed = gradients_of(&ckpt, &dev);
            // Full fine-tuning: every parameter; LoRA: only the adapters.
            let expected = if lora_on {
                2 * lora::shapes(&model).len()
            } else {
                0
            };
            assert!(plain.0.len() >= expected && !plain.0.is_empty(), "{arch}");
            assert_eq!(plain.0.len(), replayed.0.len(), "{arch} lora={lora_on}");
            // Relative to the tensor's largest gradient, or a hundredth of the
            // model's where a gradient is rounding noise by construction (a
            // key's bias cannot change a softmax over keys).
            let largest = plain
                .0
                .iter()
                .flat_map(|(_, g)| g)
                .fold(0f32, |m, x| m.max(x.abs()));
            for ((id, a), (id2, b)) in plain.0.iter().zip(&replayed.0) {
                assert_eq!(id, id2);
                let scale = a.iter().fold(largest * 1e-2, |m, x| m.max(x.abs()));
                let d = max_diff(a, b) / scale;
                assert!(d < 1e-4, "{arch} lora={lora_on}: relative difference {d}");
            }
        }
    }
}

#[test]
fn activation_checkpointing_gives_the_gradients_of_the_plain_backward() {
    each_family(&Recomputed);
}
