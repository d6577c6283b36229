//! `--set STAGE.PARAM=VALUE`: a parameter changed from the command line, as
//! if the file said so (so it is part of the keys, like any parameter). The
//! stage may be a glob over the declared names (`'ppo*.updates=2'`); the
//! stages whose kind lacks the parameter keep their own (one must have it); a
//! parameter some sweep varies gets that sweep's values instead
//! (`--set 'rm.seed=1 2'`). Values read as in KDL: integers, floats,
//! `true`/`false`, a `"quoted string"`, else the text itself; several values
//! separated by spaces make a list.

use kdl::KdlValue;

use super::experiment::{Experiment, ParamAssign};
use crate::error::{Diag, Diags};

/// Applies every `--set` to `exp`, in order (a later one wins).
pub fn apply_sets(exp: &mut Experiment, sets: &[String]) -> Result<(), Diags> {
    let mut diags = Diags::default();
    for set in sets {
        if let Err(d) = apply_one(exp, set) {
            diags.push(d);
        }
    }
    diags.into_result(())
}

fn apply_one(exp: &mut Experiment, set: &str) -> Result<(), Diag> {
    let usage = || {
        Diag::input("E-SET", format!("`--set {set}` is not STAGE.PARAM=VALUE"))
            .with_help("for example `--set sft.epochs=1`, `--set 'ppo*.updates=2'` or `--set 'phi.hidden=6 4 2'`")
    };
    let (stage, param, value) = split_set(set).ok_or_else(usage)?;
    let pattern = glob::Pattern::new(stage).map_err(|e| {
        Diag::input(
            "E-SET",
            format!("`{stage}` in `--set {set}` is not a glob: {e}"),
        )
    })?;
    let values = parse_values(value);
    let mut matched = 0;
    for sw in &mut exp.sweeps {
        for v in sw
            .varies
            .iter_mut()
            .filter(|v| pattern.matches(&v.stage) && v.param == param)
        {
            v.values = values.iter().map(|x| (x.clone(), v.target_span)).collect();
            matched += 1;
        }
    }
    for st in exp.stages.iter_mut().filter(|s| pattern.matches(&s.name)) {
        let swept = exp.sweeps.iter().any(|sw| {
            sw.varies
                .iter()
                .any(|v| v.stage == st.name && v.param == param)
        });
        if swept {
            continue;
        }
        let span = st
            .params
            .iter()
            .find(|p| p.name == param)
            .map_or(st.name_span, |p| p.span);
        st.params.retain(|p| p.name != param);
        st.params.push(ParamAssign {
            name: param.to_string(),
            span,
            values: values.iter().map(|x| (x.clone(), span)).collect(),
            set_by: Some(set.to_string()),
        });
        matched += 1;
    }
    if matched == 0 {
        let names: Vec<&str> = exp.stages.iter().map(|s| s.name.as_str()).collect();
        return Err(Diag::input(
            "E-SET",
            format!("`--set {set}`: no stage is named `{stage}`"),
        )
        .with_help(
            match crate::error::did_you_mean(stage, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("the stages are: {}", names.join(", ")),
            },
        ));
    }
    Ok(())
}

/// `STAGE.PARAM=VALUE` as its three parts (the stage may hold dots).
fn split_set(set: &str) -> Option<(&str, &str, &str)> {
    let (target, value) = set.split_once('=')?;
    let (stage, param) = target.rsplit_once('.')?;
    (!stage.is_empty() && !param.is_empty()).then_some((stage, param, value))
}

/// The (stage glob, parameter) of a `--set` that names its stages by a glob
/// (`'ppo*.updates=2'`): the stages whose kind lacks the parameter are then
/// left alone. `None` for a plain stage name.
pub fn glob_set(set: &str) -> Option<(&str, &str)> {
    split_set(set)
        .filter(|(stage, _, _)| stage.contains(['*', '?', '[']))
        .map(|(stage, param, _)| (stage, param))
}

/// `1 2`, `0.5`, `true`, `"a b"`, `text`: the values of one `--set`.
fn parse_values(text: &str) -> Vec<KdlValue> {
    let text = text.trim();
    if text.starts_with('"')
        && let Ok(s) = serde_json::from_str::<String>(text)
    {
        return vec![KdlValue::String(s)];
    }
    text.split_whitespace().map(parse_value).collect()
}

fn parse_value(word: &str) -> KdlValue {
    if let Ok(i) = word.parse::<i128>() {
        return KdlValue::Integer(i);
    }
    if let Ok(f) = word.parse::<f64>()
        && f.is_finite()
    {
        return KdlValue::Float(f);
    }
    match word {
        "true" | "#true" => KdlValue::Bool(true),
        "false" | "#false" => KdlValue::Bool(false),
        _ => KdlValue::String(word.trim_matches('"').to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_kdl_would() {
        assert_eq!(parse_values("6 4 2"), [6, 4, 2].map(KdlValue::Integer));
        assert_eq!(parse_values("0.5"), [KdlValue::Float(0.5)]);
        assert_eq!(parse_values("true"), [KdlValue::Bool(true)]);
        assert_eq!(parse_values("\"a b\""), [KdlValue::String("a b".into())]);
        assert_eq!(parse_values("text"), [KdlValue::String("text".into())]);
        assert!(parse_values("").is_empty());
    }
}
