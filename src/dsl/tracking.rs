//! The experiment's `tracking` block: where finished stage executions are
//! logged besides the cache (TensorBoard event files, an MLflow server), and
//! the `--track` flag's form of the same. Tracking never enters a cache key.

use std::path::{Path, PathBuf};

use kdl::KdlNode;

use super::kdl_util as k;
use crate::error::{Diag, SourceFile};

/// One place stage executions are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackTarget {
    /// Event files under this folder, one run per stage execution.
    TensorBoard { dir: PathBuf },
    /// An MLflow tracking server; `uri` `None` means `$MLFLOW_TRACKING_URI`.
    Mlflow {
        uri: Option<String>,
        /// The MLflow experiment; `None` means the efrlhf experiment's name.
        experiment: Option<String>,
    },
}

const TRACKERS: &[&str] = &["tensorboard", "mlflow"];

/// `tracking { tensorboard dir="runs"; mlflow uri="http://..." experiment="..." }`;
/// relative folders start at the experiment file's folder.
pub fn parse_tracking(
    src: &SourceFile,
    node: &KdlNode,
    dir: &Path,
) -> Result<Vec<TrackTarget>, Diag> {
    if !k::args(node).is_empty() {
        return Err(
            Diag::input("E-SHAPE", "`tracking` takes a block, not arguments")
                .at(src, k::name_span(node), "here")
                .with_help("write `tracking { tensorboard dir=\"runs\" }`"),
        );
    }
    let mut out = Vec::new();
    for child in k::children(node) {
        k::no_children(src, child)?;
        if let Some(extra) = k::args(child).first() {
            return Err(Diag::input(
                "E-SHAPE",
                format!("`{}` takes properties, not arguments", k::name(child)),
            )
            .at(src, extra.span(), "unexpected argument")
            .with_help(format!("write `{}`", example(k::name(child)))));
        }
        let target = match k::name(child) {
            "tensorboard" => {
                k::only_props(src, child, &["dir"])?;
                let (d, _) = k::string_prop(src, child, "dir")?.ok_or_else(|| {
                    Diag::input("E-SHAPE", "`tensorboard` needs a folder")
                        .at(src, k::name_span(child), "missing `dir`")
                        .with_help(format!("write `{}`", example("tensorboard")))
                })?;
                TrackTarget::TensorBoard { dir: dir.join(d) }
            }
            "mlflow" => {
                k::only_props(src, child, &["uri", "experiment"])?;
                TrackTarget::Mlflow {
                    uri: k::string_prop(src, child, "uri")?.map(|(u, _)| u),
                    experiment: k::string_prop(src, child, "experiment")?.map(|(e, _)| e),
                }
            }
            _ => return Err(k::unknown_node(src, child, "`tracking`", TRACKERS)),
        };
        out.push(target);
    }
    Ok(out)
}

fn example(tracker: &str) -> &'static str {
    match tracker {
        "tensorboard" => "tensorboard dir=\"runs\"",
        _ => "mlflow uri=\"http://127.0.0.1:5000\"",
    }
}

/// `--track` values: `tensorboard=DIR`, `mlflow` or `mlflow=URI`, and `none`
/// (drops the file's `tracking` block). Folders start at the working directory.
pub fn parse_track_flags(
    flags: &[String],
    from_file: Vec<TrackTarget>,
) -> Result<Vec<TrackTarget>, Diag> {
    let mut out = from_file;
    for flag in flags {
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag.as_str(), None),
        };
        match (name, value) {
            ("none", None) => out.clear(),
            ("tensorboard", Some(d)) if !d.is_empty() => {
                out.push(TrackTarget::TensorBoard { dir: d.into() });
            }
            ("mlflow", uri) => out.push(TrackTarget::Mlflow {
                uri: uri.filter(|u| !u.is_empty()).map(str::to_string),
                experiment: None,
            }),
            _ => {
                return Err(
                    Diag::input("E-USAGE", format!("`--track {flag}` is not a tracker")).with_help(
                        "use `--track tensorboard=DIR`, `--track mlflow[=URI]` or `--track none`",
                    ),
                );
            }
        }
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_add_to_the_file_and_none_clears_it() {
        let file = vec![TrackTarget::TensorBoard { dir: "a".into() }];
        let got = parse_track_flags(&["mlflow=http://h:1".into()], file.clone()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            TrackTarget::Mlflow {
                uri: Some("http://h:1".into()),
                experiment: None
            }
        );
        let got = parse_track_flags(&["none".into(), "tensorboard=b".into()], file).unwrap();
        assert_eq!(got, vec![TrackTarget::TensorBoard { dir: "b".into() }]);
        let e = parse_track_flags(&["wandb".into()], vec![]).unwrap_err();
        assert!(e.message.contains("not a tracker"), "{}", e.message);
    }
}
