//! Which role each input of a stage fills. A line may say
//! (`input "phi" role="reward-model"`); otherwise the role is the one whose
//! format is what the input's kind produces. A wrong or missing wiring is
//! an error at the input's location, before anything runs.

use crate::dsl::{Experiment, InputRole, Manifest, StageDecl};
use crate::error::{Diag, Diags, did_you_mean};

use super::build::Declared;

/// Fills `roles` of every declared stage whose kind has named inputs.
pub(super) fn assign_roles(exp: &Experiment, declared: &mut [Declared], diags: &mut Diags) {
    for s in 0..declared.len() {
        let Some(kind) = declared[s].kind.clone() else {
            continue;
        };
        if kind.roles.is_empty() {
            continue;
        }
        let st = &exp.stages[s];
        let mut roles = Vec::with_capacity(declared[s].inputs.len());
        let mut ok = true;
        let implicit: Vec<_> = st
            .inputs
            .iter()
            .zip(&declared[s].inputs)
            .filter(|(d, _)| d.role.is_none())
            .filter_map(|(_, &u)| declared[u].kind.as_ref().map(|k| k.produces))
            .collect();
        for (decl, &u) in st.inputs.iter().zip(&declared[s].inputs) {
            let Some(upstream) = declared[u].kind.clone() else {
                roles.push(None);
                ok = false;
                continue;
            };
            let alone = implicit.iter().filter(|&&f| f == upstream.produces).count() == 1;
            match role_of(exp, st, &kind, decl, &exp.stages[u].name, &upstream, alone) {
                Ok(r) => roles.push(Some(r.name.clone())),
                Err(d) => {
                    diags.push(d);
                    roles.push(None);
                    ok = false;
                }
            }
        }
        if ok {
            check_counts(exp, st, &kind, &roles, diags);
        }
        declared[s].roles = roles;
    }
}

/// The role one input fills.
fn role_of<'k>(
    exp: &Experiment,
    st: &StageDecl,
    kind: &'k Manifest,
    decl: &crate::dsl::InputDecl,
    upstream_name: &str,
    upstream: &Manifest,
    alone: bool,
) -> Result<&'k InputRole, Diag> {
    let produced = upstream.produces;
    let src = &exp.source;
    if let Some((name, span)) = &decl.role {
        let Some(role) = kind.role(name) else {
            let names = kind.roles.iter().map(|r| r.name.as_str());
            let help = match did_you_mean(name, names) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("kind `{}` takes {}", kind.name, role_list(kind)),
            };
            return Err(Diag::input(
                "E-ROLE",
                format!("kind `{}` has no input role `{name}`", kind.name),
            )
            .at(src, *span, "no such role")
            .with_help(help));
        };
        if role.format != produced {
            return Err(Diag::input(
                "E-ROLE",
                format!(
                    "input `{upstream_name}` of `{}` is {}; role `{}` needs {}",
                    st.name,
                    produced.described(),
                    role.name,
                    role.format.described()
                ),
            )
            .at(src, decl.span, format!("a `{}` stage", upstream.name))
            .with_help(format!("kind `{}` takes {}", kind.name, role_list(kind))));
        }
        return Ok(role);
    }
    let fits: Vec<&InputRole> = kind.roles.iter().filter(|r| r.format == produced).collect();
    let required: Vec<&InputRole> = fits.iter().copied().filter(|r| r.min > 0).collect();
    match fits.as_slice() {
        [one] => Ok(one),
        // The only input of its format fills the one role that must be
        // filled (dpo's `policy`; its optional `reference` is named).
        [_, _, ..] if alone && required.len() == 1 => Ok(required[0]),
        [] => Err(Diag::input(
            "E-ROLE",
            format!(
                "input `{upstream_name}` of `{}` is {}, which no input of kind `{}` takes",
                st.name,
                produced.described(),
                kind.name
            ),
        )
        .at(src, decl.span, format!("a `{}` stage", upstream.name))
        .with_help(format!("kind `{}` takes {}", kind.name, role_list(kind)))),
        many => Err(Diag::input(
            "E-ROLE",
            format!(
                "input `{upstream_name}` of `{}` could fill roles {}",
                st.name,
                many.iter()
                    .map(|r| format!("`{}`", r.name))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        )
        .at(src, decl.span, "which one?")
        .with_help(format!(
            "say which: `input \"{upstream_name}\" role=\"{}\"`",
            many[0].name
        ))),
    }
}

/// Every role got as many inputs as it takes.
fn check_counts(
    exp: &Experiment,
    st: &StageDecl,
    kind: &Manifest,
    roles: &[Option<String>],
    diags: &mut Diags,
) {
    for role in &kind.roles {
        let filled: Vec<usize> = roles
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_deref() == Some(role.name.as_str()))
            .map(|(i, _)| i)
            .collect();
        if filled.len() < role.min {
            diags.push(
                Diag::input(
                    "E-ROLE",
                    format!(
                        "stage `{}` has no input for role `{}`: kind `{}` needs {}, {}",
                        st.name,
                        role.name,
                        kind.name,
                        role.arity(),
                        role.format.described()
                    ),
                )
                .at(&exp.source, st.name_span, "this stage")
                .with_help(format!(
                    "add `input \"STAGE\"` naming a stage that produces {}",
                    role.format.described()
                )),
            );
        }
        if let Some(max) = role.max
            && filled.len() > max
        {
            let extra = &st.inputs[filled[max]];
            diags.push(
                Diag::input(
                    "E-ROLE",
                    format!(
                        "role `{}` of `{}` takes {}, and {} inputs fill it",
                        role.name,
                        st.name,
                        role.arity(),
                        filled.len()
                    ),
                )
                .at(&exp.source, extra.span, "one too many")
                .also(st.inputs[filled[0]].span, "the first")
                .with_help("remove one of these inputs, or add another stage for it"),
            );
        }
    }
}

/// `policy (a model), datasets (one or more datasets)`.
fn role_list(kind: &Manifest) -> String {
    kind.roles
        .iter()
        .map(|r| format!("`{}` ({}, {})", r.name, r.format.described(), r.arity()))
        .collect::<Vec<_>>()
        .join(", ")
}
