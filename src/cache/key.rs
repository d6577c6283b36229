//! Stage keys: what decides whether a stored result can be reused.
//!
//! A key is blake3 over the canonical JSON of [`KeyComponents`], prefixed by
//! a format tag. **In** the key:
//! 1. the declared stage name and its kind's identity: name, version, and an
//!    implementation digest (its manifest minus docs, and for a built-in the
//!    source identity of its code derived at build time, for an external
//!    plugin the content of its program files),
//! 2. every parameter after defaults are filled in, typed (an int written for
//!    a float is that float), canonically ordered,
//! 3. the *output* digests of its inputs, in order, with the role each fills
//!    (an upstream rerun that produces identical bytes does not force this
//!    stage to rerun), and the content digests of `path` parameters (not the
//!    paths themselves); for an `hf://` path, the repository, the commit its
//!    revision resolved to and the Hub's content hashes of the files it
//!    selects (never the bytes re-read),
//! 4. the seed, and the backend class (`cpu`/`gpu`) for kinds that compute on one.
//!
//! **Out** of the key, on purpose: the experiment's name and file path,
//! whitespace and comments, documentation strings, absolute paths of the
//! checkout, times, the environment.
//!
//! The components are stored next to each run so [`diff`] can say why a key changed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dsl::Value;
use crate::hub::HubIdentity;

/// Bump when the encoding or the meaning of a component changes.
pub const KEY_FORMAT: u32 = 1;

/// Hex blake3 of the components.
pub type StageKey = String;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDigest {
    /// The upstream stage's declared name (for messages; kept in the hash too).
    pub stage: String,
    /// Its output digest.
    pub output: String,
    /// The role it fills, for kinds with named inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    pub format: u32,
    pub stage: String,
    pub kind: String,
    pub kind_version: String,
    pub implementation: String,
    /// Parameters that are not paths.
    pub params: BTreeMap<String, Value>,
    /// `path` parameters: content digests by parameter name (`name[i]` in lists).
    pub files: BTreeMap<String, String>,
    /// `hf://` path parameters: what they resolved to, by parameter name.
    /// Absent from the encoding when empty, so keys without one are unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hub: BTreeMap<String, HubIdentity>,
    pub inputs: Vec<InputDigest>,
    pub seed: i64,
    pub backend: Option<String>,
}

impl KeyComponents {
    pub fn key(&self) -> StageKey {
        let mut h = blake3::Hasher::new();
        h.update(b"efrlhf-stage-key\n");
        // Hub parameters count by content: the name of the revision is left out.
        let hashed;
        let this = if self.hub.is_empty() {
            self
        } else {
            hashed = KeyComponents {
                hub: self
                    .hub
                    .iter()
                    .map(|(k, v)| (k.clone(), v.content()))
                    .collect(),
                ..self.clone()
            };
            &hashed
        };
        // Serialising plain data with ordered maps cannot fail and is deterministic.
        h.update(&serde_json::to_vec(this).unwrap_or_default());
        h.finalize().to_hex().to_string()
    }
}

/// One reason two keys differ.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Format {
        old: u32,
        new: u32,
    },
    Kind {
        old: String,
        new: String,
    },
    KindVersion {
        old: String,
        new: String,
    },
    /// The kind's implementation changed; `parts` names what, where known.
    Implementation {
        kind: String,
        parts: Vec<String>,
    },
    Param {
        name: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    File {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// The same `hf://` revision resolved to another commit (a branch moved).
    HubMoved {
        param: String,
        repo: String,
        revision: String,
        old: String,
        new: String,
    },
    /// An `hf://` parameter now names another repository, revision or file,
    /// or the files it selects changed.
    HubSource {
        param: String,
        old: Option<String>,
        new: Option<String>,
    },
    InputCount {
        old: usize,
        new: usize,
    },
    Input {
        index: usize,
        stage: String,
        old_stage: String,
    },
    InputRole {
        stage: String,
        old: Option<String>,
        new: Option<String>,
    },
    Seed {
        old: i64,
        new: i64,
    },
    Backend {
        old: Option<String>,
        new: Option<String>,
    },
}

fn show_opt(v: &Option<Value>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "(unset)".into())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Format { old, new } => write!(f, "cache key format: {old} -> {new}"),
            Change::Kind { old, new } => write!(f, "kind: `{old}` -> `{new}`"),
            Change::KindVersion { old, new } => write!(f, "kind version: {old} -> {new}"),
            Change::Implementation { kind, parts } if parts.is_empty() => {
                write!(f, "the implementation of `{kind}` changed")
            }
            Change::Implementation { kind, parts } => write!(
                f,
                "the implementation of `{kind}` changed: {}",
                parts.join(", ")
            ),
            Change::Param { name, old, new } => {
                write!(f, "param `{name}`: {} -> {}", show_opt(old), show_opt(new))
            }
            Change::File {
                name,
                old: Some(_),
                new: Some(_),
            } => write!(f, "content of `{name}` changed"),
            Change::File { name, old, new } => {
                write!(
                    f,
                    "file param `{name}`: {} -> {}",
                    if old.is_some() { "set" } else { "unset" },
                    if new.is_some() { "set" } else { "unset" }
                )
            }
            Change::HubMoved {
                param,
                repo,
                revision,
                old,
                new,
            } => write!(
                f,
                "`{revision}` of {repo} moved from {} to {} (param `{param}`)",
                short(old),
                short(new)
            ),
            Change::HubSource { param, old, new } => write!(
                f,
                "param `{param}`: {} -> {}",
                old.as_deref().unwrap_or("(unset)"),
                new.as_deref().unwrap_or("(unset)")
            ),
            Change::InputCount { old, new } => write!(f, "number of inputs: {old} -> {new}"),
            Change::Input {
                stage, old_stage, ..
            } if stage != old_stage => write!(f, "input `{old_stage}` replaced by `{stage}`"),
            Change::Input { stage, .. } => write!(f, "output of input `{stage}` changed"),
            Change::InputRole { stage, old, new } => write!(
                f,
                "input `{stage}`: role {} -> {}",
                old.as_deref().unwrap_or("(none)"),
                new.as_deref().unwrap_or("(none)")
            ),
            Change::Seed { old, new } => write!(f, "seed: {old} -> {new}"),
            Change::Backend { old, new } => write!(
                f,
                "backend: {} -> {}",
                old.as_deref().unwrap_or("none"),
                new.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// A commit hash as people read it: its first seven digits.
fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

/// How the `hf://` parameters differ.
fn hub_changes(old: &KeyComponents, new: &KeyComponents, out: &mut Vec<Change>) {
    let names: std::collections::BTreeSet<&String> = old.hub.keys().chain(new.hub.keys()).collect();
    for name in names {
        match (old.hub.get(name), new.hub.get(name)) {
            (Some(o), Some(n)) if o.content() == n.content() => {}
            (Some(o), Some(n))
                if o.repo == n.repo && o.path == n.path && o.revision == n.revision =>
            {
                out.push(Change::HubMoved {
                    param: name.clone(),
                    repo: n.repo.clone(),
                    revision: n.revision.clone(),
                    old: o.commit.clone(),
                    new: n.commit.clone(),
                })
            }
            (o, n) => out.push(Change::HubSource {
                param: name.clone(),
                old: o.map(HubIdentity::label),
                new: n.map(HubIdentity::label),
            }),
        }
    }
}

/// What changed from `old` to `new`. With `with_inputs` false, input digests
/// are not compared (used when upstream results are not known yet).
pub fn diff(old: &KeyComponents, new: &KeyComponents, with_inputs: bool) -> Vec<Change> {
    let mut out = Vec::new();
    if old.format != new.format {
        out.push(Change::Format {
            old: old.format,
            new: new.format,
        });
    }
    if old.kind != new.kind {
        out.push(Change::Kind {
            old: old.kind.clone(),
            new: new.kind.clone(),
        });
    } else if old.kind_version != new.kind_version {
        out.push(Change::KindVersion {
            old: old.kind_version.clone(),
            new: new.kind_version.clone(),
        });
    } else if old.implementation != new.implementation {
        out.push(Change::Implementation {
            kind: new.kind.clone(),
            parts: Vec::new(),
        });
    }
    let names: std::collections::BTreeSet<&String> =
        old.params.keys().chain(new.params.keys()).collect();
    for name in names {
        let (o, n) = (old.params.get(name), new.params.get(name));
        if o != n {
            out.push(Change::Param {
                name: name.clone(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    let names: std::collections::BTreeSet<&String> =
        old.files.keys().chain(new.files.keys()).collect();
    for name in names {
        let (o, n) = (old.files.get(name), new.files.get(name));
        if o != n {
            out.push(Change::File {
                name: name.clone(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    hub_changes(old, new, &mut out);
    if old.inputs.len() != new.inputs.len() {
        out.push(Change::InputCount {
            old: old.inputs.len(),
            new: new.inputs.len(),
        });
    } else {
        for (i, (o, n)) in old.inputs.iter().zip(&new.inputs).enumerate() {
            if o.stage != n.stage || (with_inputs && o.output != n.output) {
                out.push(Change::Input {
                    index: i,
                    stage: n.stage.clone(),
                    old_stage: o.stage.clone(),
                });
            } else if o.role != n.role {
                out.push(Change::InputRole {
                    stage: n.stage.clone(),
                    old: o.role.clone(),
                    new: n.role.clone(),
                });
            }
        }
    }
    if old.seed != new.seed {
        out.push(Change::Seed {
            old: old.seed,
            new: new.seed,
        });
    }
    if old.backend != new.backend {
        out.push(Change::Backend {
            old: old.backend.clone(),
            new: new.backend.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp() -> KeyComponents {
        KeyComponents {
            format: KEY_FORMAT,
            stage: "b".into(),
            kind: "shout".into(),
            kind_version: "1".into(),
            implementation: "x".into(),
            params: BTreeMap::from([("times".to_string(), Value::Int(1))]),
            files: BTreeMap::new(),
            hub: BTreeMap::new(),
            inputs: vec![InputDigest {
                stage: "a".into(),
                output: "d1".into(),
                role: None,
            }],
            seed: 7,
            backend: None,
        }
    }

    #[test]
    fn key_changes_with_each_component_and_diff_names_it() {
        let a = comp();
        let mut b = comp();
        assert_eq!(a.key(), b.key());
        b.params.insert("times".into(), Value::Int(2));
        assert_ne!(a.key(), b.key());
        assert_eq!(
            diff(&a, &b, true),
            vec![Change::Param {
                name: "times".into(),
                old: Some(Value::Int(1)),
                new: Some(Value::Int(2))
            }]
        );
        assert_eq!(diff(&a, &b, true)[0].to_string(), "param `times`: 1 -> 2");
        let mut c = comp();
        c.inputs[0].output = "d2".into();
        assert_ne!(a.key(), c.key());
        assert_eq!(diff(&a, &c, true).len(), 1);
        assert!(diff(&a, &c, false).is_empty());
        let mut d = comp();
        d.seed = 8;
        assert_eq!(diff(&a, &d, true), vec![Change::Seed { old: 7, new: 8 }]);
    }

    #[test]
    fn a_moved_branch_is_named_and_an_empty_hub_part_leaves_keys_alone() {
        let a = comp();
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("hub"), "{json}");
        let id = |commit: &str| HubIdentity {
            repo: "facebook/bart-large".into(),
            path: None,
            revision: "main".into(),
            commit: commit.into(),
            files: BTreeMap::from([("config.json".to_string(), "ab".to_string())]),
        };
        let mut b = comp();
        b.hub.insert("pretrained".into(), id("1a2b3c4d"));
        let mut c = comp();
        c.hub.insert("pretrained".into(), id("5d6e7f8a"));
        assert_ne!(b.key(), c.key());
        let d = diff(&b, &c, true);
        assert_eq!(
            d[0].to_string(),
            "`main` of facebook/bart-large moved from 1a2b3c4 to 5d6e7f8 (param `pretrained`)"
        );
        // Naming the same commit another way changes nothing.
        let mut e = comp();
        let mut pinned = id("1a2b3c4d");
        pinned.revision = "1a2b3c4d".into();
        e.hub.insert("pretrained".into(), pinned);
        assert_eq!(b.key(), e.key());
        assert!(diff(&b, &e, true).is_empty());
    }

    #[test]
    fn int_and_float_params_hash_differently() {
        let a = comp();
        let mut b = comp();
        b.params.insert("times".into(), Value::Float(1.0));
        assert_ne!(a.key(), b.key());
    }
}
