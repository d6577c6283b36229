//! The built-in kinds' implementation identities, derived at build time from
//! their source (`build.rs`, `build/identity.rs`): the digest over the
//! normalized tokens of every module a kind reaches, the files those embed,
//! and the locked versions of the crates they name. A change to any of them
//! changes the identity, and with it every key of the kind; comments,
//! formatting and tests do not.

/// One kind module's identity.
#[derive(Debug)]
pub struct ModuleIdentity {
    /// The module path (`stages::ppo`).
    pub module: &'static str,
    /// blake3 over its closure's files and crates.
    pub digest: &'static str,
    /// `file digest` of every source and embedded file it reaches.
    pub files: &'static [&'static str],
    /// `name version` of every locked crate it reaches.
    pub crates: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/source_identity.rs"));

/// The identity of a kind module, if it is one.
pub fn of_module(module: &str) -> Option<&'static ModuleIdentity> {
    MODULE_IDENTITIES.iter().find(|m| m.module == module)
}

impl ModuleIdentity {
    /// The parts that make up the digest, by name: a file's digest under its
    /// path, a crate's version under `crate name`. `explain` compares these
    /// to say what changed.
    pub fn parts(&self) -> Vec<(String, String)> {
        let mut out: std::collections::BTreeMap<String, String> = self
            .files
            .iter()
            .filter_map(|f| f.rsplit_once(' '))
            .map(|(path, digest)| (path.to_string(), digest.to_string()))
            .collect();
        for c in self.crates {
            if let Some((name, version)) = c.split_once(' ') {
                let v = out.entry(format!("crate {name}")).or_default();
                if !v.is_empty() {
                    v.push_str(", ");
                }
                v.push_str(version);
            }
        }
        out.into_iter().collect()
    }
}
