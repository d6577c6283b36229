//! A sandbox per test: a folder with the test plugin, an experiment file, a
//! cache, and a call log that the plugin appends each stage it computes to.
#![allow(dead_code)]

pub mod browser;
pub mod chat;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python of `EFRLHF_TRACKING_PYTHON` (CI's venv; else `python3`) if
/// it imports `modules` (`"tensorboard, mlflow"`); else `None`, and the
/// calling test is skipped, unless `EFRLHF_REQUIRE_TRACKING` says it must run.
#[allow(clippy::print_stderr)] // says why the calling test is skipped
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let python = std::env::var_os("EFRLHF_TRACKING_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("EFRLHF_REQUIRE_TRACKING").is_none(),
        "EFRLHF_REQUIRE_TRACKING is set but {} cannot import {modules}",
        python.display()
    );
    eprintln!("skipped: no Python that imports {modules}");
    None
}

/// A file or folder of the datasets that ship in `data/`.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(rel)
}

/// The first stages of the small ML pipelines of the tests: OpinPref's
/// train (64) and validation (16) products, a 400-token tokenizer and a
/// one-epoch, one-layer, 32-wide SFT (KDL text).
pub fn tiny_summarizer() -> String {
    format!(
        r#"
stage "train" kind="dataset" {{
    source "opinpref" path="{p}"
    split "train"
    limit 64
}}
stage "val" kind="dataset" {{
    source "opinpref" path="{p}"
    split "validation"
    limit 16
}}
stage "tok" kind="tokenizer" {{
    input "train"
    vocab-size 400
}}
stage "sft" kind="sft" {{
    input "train" "tok"
    d-model 32
    layers 1
    heads 2
    epochs 1
    lr 0.003
    max-source 64
    max-target 32
    train-split "train"
    validation-split "train"
    val-products 8
    checkpoint-every 0
}}
"#,
        p = data("opinpref").display()
    )
}

/// [`tiny_summarizer`], then φ on the stored scores, three PPO updates of
/// the SFT model against it, and the evaluation of both on 4 validation products.
pub fn tiny_rlhf() -> String {
    tiny_summarizer()
        + r#"stage "phi" kind="reward-model" {
    input "train" "val"
    hidden 6 4 2
    epochs 5
}
stage "ppo" kind="ppo" {
    input "sft" "phi" "train"
    updates 3
    batch 4
    minibatch 2
    max-source 64
    max-new-tokens 16
    checkpoint-every 0
}
stage "eval" kind="eval" {
    input "sft" "ppo" "phi" "val"
    split "validation"
    reference "preferred"
    max-products 4
    max-source 64
    max-new-tokens 16
}
"#
}

/// The stages of `run --json` events of one kind (`stage-done`, ...), sorted.
pub fn stages_with(events: &[serde_json::Value], event: &str) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["stage"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

/// Asserts that a command succeeded, showing its stderr when not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const BIN: &str = env!("CARGO_BIN_EXE_efrlhf");

pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sandbox-{name}"));
        if dir.exists() {
            make_writable(&dir);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins");
        for f in ["tshout.kdl", "tshout.py"] {
            std::fs::copy(fixtures.join(f), dir.join("plugins").join(f)).unwrap();
        }
        Sandbox { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// The kind `twrap`: `tshout` run as a grandchild of the runner, by a
    /// shell script that then runs `after` (shell lines).
    pub fn wrapper_plugin(&self, after: &str) {
        let manifest = self
            .read("plugins/tshout.kdl")
            .replacen("plugin \"tshout\"", "plugin \"twrap\"", 1)
            .replace("run \"python3\" \"tshout.py\"", "run \"sh\" \"twrap.sh\"");
        self.write("plugins/twrap.kdl", &manifest);
        self.write(
            "plugins/twrap.sh",
            &format!("python3 \"$(dirname \"$0\")/tshout.py\"\n{after}"),
        );
    }

    /// Writes `exp.kdl` with the plugin folder declared, followed by `body`.
    pub fn experiment(&self, body: &str) {
        self.write(
            "exp.kdl",
            &format!("experiment \"t\" {{\n    seed 7\n    plugins \"plugins\"\n}}\n{body}"),
        );
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(&self.dir)
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(args)
            .env("EFRLHF_TEST_CALLS", self.path("calls.txt"))
            .env_remove("EFRLHF_CACHE")
            .env_remove("EFRLHF_PLUGIN_PATH");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "efrlhf panicked:\n{stderr}");
        out
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`efrlhf {}` failed ({:?}):\n{}\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stage ids the plugin computed, in order.
    pub fn calls(&self) -> Vec<String> {
        self.read("calls.txt").lines().map(str::to_string).collect()
    }

    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.path("calls.txt"));
    }

    /// `run --json` events as (event, stage).
    pub fn run_events(&self, extra: &[&str]) -> Vec<(String, String)> {
        let mut args = vec!["run", "exp.kdl", "--json"];
        args.extend_from_slice(extra);
        events(&self.ok(&args))
    }

    /// The key of stage `id`, as `plan --json` gives it.
    pub fn key_of(&self, id: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["plan", "exp.kdl", "--json"])).unwrap();
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["key"].as_str())
            .unwrap_or_else(|| panic!("no stage `{id}`"))
            .to_string()
    }

    /// `plan --json` as (id, status) pairs.
    pub fn plan(&self) -> Vec<(String, String)> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["plan", "exp.kdl", "--json"])).unwrap();
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

pub fn events(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["stage"].is_string())
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_string(),
                v["stage"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Stage ids with a given event.
pub fn with_event(events: &[(String, String)], event: &str) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == event)
        .map(|(_, s)| s.clone())
        .collect();
    v.sort();
    v
}

pub fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode(if p.is_dir() { 0o755 } else { 0o644 }),
            );
            if p.is_dir() {
                make_writable(&p);
            }
        }
    }
}

/// Every file below `dir`, relative.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

impl Sandbox {
    /// The metrics of stage `id`, as `show --format json` gives them.
    pub fn stage_metrics(&self, id: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("no stage `{id}`"))["metrics"]
            .clone()
    }

    /// The stored result folder that holds `file`.
    pub fn artifact_with(&self, file: &str) -> PathBuf {
        std::fs::read_dir(self.path("cache/artifacts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join(file).exists())
            .unwrap_or_else(|| panic!("no stored result holds `{file}`"))
    }

    /// The stored result folder of stage `id` (from `show --format json`).
    pub fn output_of(&self, id: &str) -> PathBuf {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["show", "exp.kdl", "--format", "json"])).unwrap();
        let stage = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id);
        PathBuf::from(
            stage
                .and_then(|x| x["output"].as_str())
                .unwrap_or_else(|| panic!("no output of `{id}`: {v}")),
        )
    }

    /// Every stage log of the cache, concatenated.
    pub fn all_logs(&self) -> String {
        std::fs::read_dir(self.path("cache/logs"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect()
    }

    /// Whether a stage checkpoint's `state.json` holds `text` (`"update"`,
    /// `"step"`): a complete checkpoint of that kind of progress exists.
    pub fn has_checkpoint_with(&self, text: &str) -> bool {
        std::fs::read_dir(self.path("cache/checkpoints"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("state.json")).ok())
                    .any(|t| t.contains(text))
            })
            .unwrap_or(false)
    }

    /// Starts `run exp.kdl`, waits until `ready` holds, then kills the runner with SIGKILL.
    pub fn kill_run_when(&self, ready: impl Fn() -> bool) {
        let mut child = self
            .cmd(&["run", "exp.kdl"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !ready() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(300),
                "the run never got there"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        unsafe { sigkill(child.id() as i32, 9) };
        let _ = child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn sigkill(pid: i32, sig: i32) -> i32;
}

/// The tensors of a safetensors file of f32 values, by name: (shape, values).
pub fn read_safetensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}
