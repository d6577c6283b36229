//! The table of built-in kinds: each one's manifest (embedded), the module
//! that implements it (whose source identity goes into its keys) and its
//! [`Stage`].

use super::identity::{ModuleIdentity, of_module};
use super::kind::Stage;

/// One built-in kind.
pub struct Builtin {
    /// The kind's name, as in its manifest.
    pub name: &'static str,
    /// The manifest's path, shown in errors.
    pub manifest_path: &'static str,
    /// The manifest's text.
    pub manifest: &'static str,
    /// The module that implements it (`stages::ppo`).
    pub module: &'static str,
    /// The implementation.
    pub stage: &'static dyn Stage,
}

impl Builtin {
    /// The kind's source identity (every kind has one: `tests` check it).
    pub fn identity(&self) -> Option<&'static ModuleIdentity> {
        of_module(self.module)
    }
}

macro_rules! builtin {
    ($name:literal, $module:ident, $stage:ident) => {
        Builtin {
            name: $name,
            manifest_path: concat!("plugins/builtin/", $name, ".kdl"),
            manifest: include_str!(concat!("../../plugins/builtin/", $name, ".kdl")),
            module: concat!("stages::", stringify!($module)),
            stage: &super::$module::$stage,
        }
    };
}

/// Every built-in kind.
pub static BUILTINS: &[Builtin] = &[
    builtin!("dataset", dataset, DatasetStage),
    builtin!("tokenizer", tokenizer, TokenizerStage),
    builtin!("reward-model", reward, RewardStage),
    builtin!("featurize", featurize, FeaturizeStage),
    builtin!("sft", sft, SftStage),
    builtin!("model", model, ModelStage),
    builtin!("ppo", ppo, PpoStage),
    builtin!("grpo", grpo, GrpoStage),
    builtin!("dpo", dpo, DpoStage),
    builtin!("eval", eval, EvalStage),
    builtin!("preference", preference, PreferenceStage),
];

/// The built-in kind of this name.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// `(path, text)` of every built-in manifest, for the registry.
pub fn builtin_manifests() -> Vec<(&'static str, &'static str)> {
    BUILTINS
        .iter()
        .map(|b| (b.manifest_path, b.manifest))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsl::{Exec, ParamSpec, ParamType, Registry};
    use crate::stages::formats::Format;
    use serde_json::Value as Json;

    fn registry() -> Registry {
        Registry::load(&builtin_manifests(), &[]).unwrap_or_else(|d| panic!("{d:?}"))
    }

    /// `v`, or the definition its `$ref` names.
    fn resolve<'a>(root: &'a Json, v: &'a Json) -> &'a Json {
        match v.get("$ref").and_then(Json::as_str) {
            Some(r) => &root["$defs"][r.rsplit('/').next().unwrap_or_default()],
            None => v,
        }
    }

    /// The manifest's name for a schema's type.
    fn type_name(root: &Json, v: &Json) -> String {
        let v = resolve(root, v);
        match v["type"].as_str() {
            Some("integer") => "int".into(),
            Some("number") => "float".into(),
            Some("boolean") => "bool".into(),
            Some("string") => "string".into(),
            Some("array") => format!("list<{}>", type_name(root, &v["items"])),
            // An enum documented variant by variant: `oneOf` string constants.
            _ if v.get("oneOf").is_some() => "string".into(),
            other => panic!("unexpected schema type {other:?}: {v}"),
        }
    }

    fn manifest_type(t: &ParamType) -> String {
        match t {
            ParamType::Path => "string".into(),
            ParamType::List(e) => format!("list<{}>", manifest_type(e)),
            t => t.to_string(),
        }
    }

    /// The choices an enum schema allows (empty for other types).
    fn choices(root: &Json, v: &Json) -> Vec<Json> {
        let v = resolve(root, v);
        if let Some(items) = v.get("items") {
            return choices(root, items);
        }
        if let Some(e) = v["enum"].as_array() {
            return e.clone();
        }
        let consts = v["oneOf"].as_array().into_iter().flatten();
        consts
            .flat_map(|c| match (c.get("const"), c["enum"].as_array()) {
                (Some(k), _) => vec![k.clone()],
                (None, Some(e)) => e.clone(),
                _ => vec![],
            })
            .collect()
    }

    /// `minimum` and `maximum` (of the items, for a list).
    fn range(root: &Json, v: &Json) -> (Option<f64>, Option<f64>) {
        let v = resolve(root, v);
        if let Some(items) = v.get("items") {
            return range(root, items);
        }
        (v["minimum"].as_f64(), v["maximum"].as_f64())
    }

    fn sorted(mut v: Vec<Json>) -> Vec<String> {
        let mut s: Vec<String> = v.drain(..).map(|x| x.to_string()).collect();
        s.sort();
        s
    }

    fn check_param(kind: &str, spec: &ParamSpec, root: &Json, prop: &Json, required: bool) {
        let at = format!("`{kind}.{}`", spec.name);
        assert_eq!(
            type_name(root, prop),
            manifest_type(&spec.ty),
            "type of {at}"
        );
        match &spec.default {
            Some(d) => {
                assert!(
                    !required,
                    "{at} has a manifest default but the struct requires it"
                );
                assert_eq!(prop["default"], d.to_json(), "default of {at}");
            }
            None => assert!(
                required,
                "{at} is required by the manifest, not by the struct"
            ),
        }
        assert_eq!(range(root, prop), (spec.min, spec.max), "range of {at}");
        let manifest_choices: Vec<Json> = spec.choices.iter().map(|c| c.to_json()).collect();
        assert_eq!(
            sorted(choices(root, prop)),
            sorted(manifest_choices),
            "choices of {at}"
        );
    }

    /// Every built-in: its manifest's parameters are its struct's fields,
    /// with the same types, defaults, ranges and choices.
    #[test]
    fn manifests_and_parameter_structs_agree() {
        let reg = registry();
        for b in BUILTINS {
            let m = reg.get(b.name).expect("manifest");
            let root = serde_json::to_value(b.stage.params_schema()).unwrap_or_default();
            let props = root["properties"].as_object().cloned().unwrap_or_default();
            // The struct has a default for every field (serde fills gaps from
            // `Default`); those without a manifest default say `x-required`.
            let required: Vec<&str> = props
                .iter()
                .filter(|(_, v)| v["x-required"] == true)
                .map(|(k, _)| k.as_str())
                .collect();
            let names: Vec<&String> = props.keys().collect();
            let declared: Vec<&String> = {
                let mut d: Vec<&String> = m.params.iter().map(|p| &p.name).collect();
                d.sort();
                d
            };
            assert_eq!(names, declared, "parameters of `{}`", b.name);
            for spec in &m.params {
                let required = required.contains(&spec.name.as_str());
                check_param(b.name, spec, &root, &props[&spec.name], required);
            }
        }
    }

    /// The format and count of an inputs-struct field.
    fn role_shape(root: &Json, v: &Json) -> (Format, bool, bool) {
        let format_of = |v: &Json| {
            let r = v["$ref"].as_str().unwrap_or_default();
            Format::parse(r.rsplit('/').next().unwrap_or_default())
                .unwrap_or_else(|| panic!("not a format input: {v}"))
        };
        if v["type"] == "array" {
            return (format_of(&v["items"]), true, false);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = v[key].as_array() {
                let inner = alts.iter().find(|a| a["type"] != "null").unwrap_or(v);
                return (format_of(inner), false, true);
            }
        }
        let _ = root;
        (format_of(v), false, false)
    }

    /// Every built-in: its manifest's input roles are its inputs struct's
    /// fields, with the same formats and counts.
    #[test]
    fn manifests_and_input_structs_agree() {
        let reg = registry();
        for b in BUILTINS {
            let m = reg.get(b.name).expect("manifest");
            let root = serde_json::to_value(b.stage.inputs_schema()).unwrap_or_default();
            let props = root["properties"].as_object().cloned().unwrap_or_default();
            let mut declared: Vec<&String> = m.roles.iter().map(|r| &r.name).collect();
            declared.sort();
            assert_eq!(
                props.keys().collect::<Vec<_>>(),
                declared,
                "roles of `{}`",
                b.name
            );
            for r in &m.roles {
                let (format, many, optional) = role_shape(&root, &props[&r.name]);
                let at = format!("`{}` role `{}`", b.name, r.name);
                assert_eq!(format, r.format, "format of {at}");
                assert_eq!(many, r.is_many(), "count of {at}");
                if !many {
                    assert_eq!(optional, r.min == 0, "optionality of {at}");
                }
            }
        }
    }

    /// Every built-in: its manifest parses, names this entry, binds to it,
    /// documents every parameter and role, and says what it produces; its
    /// defaults pass its own checks; it has a source identity of its own.
    #[test]
    fn the_builtin_table_is_consistent() {
        let reg = registry();
        assert_eq!(reg.names().count(), BUILTINS.len());
        let mut identities = std::collections::BTreeSet::new();
        for b in BUILTINS {
            let m = reg
                .get(b.name)
                .unwrap_or_else(|| panic!("manifest of `{}` names another kind", b.name));
            match &m.exec {
                Exec::Builtin { name } => assert_eq!(name, b.name),
                other => panic!("`{}` does not bind to a built-in: {other:?}", b.name),
            }
            assert!(!m.doc.is_empty(), "`{}` has no doc", b.name);
            for p in &m.params {
                assert!(!p.doc.is_empty(), "`{}.{}` has no doc", b.name, p.name);
            }
            for r in &m.roles {
                assert!(
                    !r.doc.is_empty(),
                    "`{}` role `{}` has no doc",
                    b.name,
                    r.name
                );
            }
            assert_ne!(
                m.produces,
                Format::Files,
                "`{}` says nothing of its result",
                b.name
            );
            let mut defaults: serde_json::Map<String, Json> = m
                .params
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.default.as_ref()?.to_json())))
                .collect();
            // The dataset's required parameters, set as a user would.
            if b.name == "dataset" {
                defaults.insert("source".into(), "opinpref".into());
                defaults.insert("path".into(), "data/opinpref".into());
            }
            if b.name == "model" {
                defaults.insert("pretrained".into(), "tests/fixtures/bart/tiny".into());
            }
            b.stage
                .check_params(&Json::Object(defaults))
                .unwrap_or_else(|e| panic!("`{}` defaults: {e}", b.name));
            let id = b
                .identity()
                .unwrap_or_else(|| panic!("`{}` has no identity", b.name));
            assert!(
                identities.insert(id.digest),
                "`{}` shares its identity",
                b.name
            );
        }
    }
}
