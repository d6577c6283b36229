//! What a stage asks of the machine it runs on: GPUs, CPUs, memory, wall
//! time. A stage's `resources gpus=1 cpus=8 mem="32G" time="4h"` over its
//! kind's `requests ...` in the manifest. Requests are never part of a key:
//! moving from a laptop to a cluster must not invalidate anything. The local
//! executor ignores them; the Slurm executor turns them into `sbatch` flags.

use kdl::{KdlNode, KdlValue};
use serde::Serialize;

use super::kdl_util as k;
use crate::error::{Diag, SourceFile};

/// A stage's requests; `None` means "the executor's default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    pub gpus: Option<u32>,
    pub cpus: Option<u32>,
    /// Slurm's form: a number with an optional K, M, G or T (`32G`).
    pub mem: Option<String>,
    /// Slurm's form: minutes, `HH:MM:SS` or `D-HH:MM:SS` (`4h` is written `240`).
    pub time: Option<String>,
}

impl Requests {
    /// These requests, falling back to `default` for what they leave unset.
    pub fn or(&self, default: &Requests) -> Requests {
        Requests {
            gpus: self.gpus.or(default.gpus),
            cpus: self.cpus.or(default.cpus),
            mem: self.mem.clone().or_else(|| default.mem.clone()),
            time: self.time.clone().or_else(|| default.time.clone()),
        }
    }
}

const PROPS: &[&str] = &["gpus", "cpus", "mem", "time"];

/// `resources gpus=1 cpus=8 mem="32G" time="4h"` (or a manifest's `requests`).
pub fn parse_requests(src: &SourceFile, node: &KdlNode) -> Result<Requests, Diag> {
    k::no_children(src, node)?;
    if let Some(a) = k::args(node).first() {
        return Err(Diag::input(
            "E-SHAPE",
            format!("`{}` takes properties, not arguments", k::name(node)),
        )
        .at(src, a.span(), "unexpected argument")
        .with_help(format!(
            "write `{} gpus=1 cpus=8 mem=\"32G\" time=\"4h\"`",
            k::name(node)
        )));
    }
    let mut r = Requests::default();
    for (name, e) in k::props(node) {
        let bad = |what: &str| {
            Diag::input("E-VALUE", format!("`{name}` takes {what}")).at(src, e.span(), "here")
        };
        match name {
            "gpus" | "cpus" => {
                let n = match e.value() {
                    KdlValue::Integer(i) => u32::try_from(*i).ok(),
                    _ => None,
                }
                .ok_or_else(|| bad("a non-negative integer"))?;
                if name == "gpus" {
                    r.gpus = Some(n);
                } else {
                    r.cpus = Some(n.max(1));
                }
            }
            "mem" => {
                let text = string_or_int(e.value()).ok_or_else(|| bad("a size such as \"32G\""))?;
                r.mem = Some(
                    memory(&text)
                        .ok_or_else(|| bad("a size such as \"32G\", \"500M\" or \"1T\""))?,
                );
            }
            "time" => {
                let text =
                    string_or_int(e.value()).ok_or_else(|| bad("a duration such as \"4h\""))?;
                r.time = Some(wall_time(&text).ok_or_else(|| {
                    bad("a duration such as \"4h\", \"90m\", \"2d\" or Slurm's \"1-12:00:00\"")
                })?);
            }
            _ => {
                let mut d = Diag::input(
                    "E-SHAPE",
                    format!("`{}` has no property `{name}`", k::name(node)),
                )
                .at(src, e.span(), "not understood here");
                d.help = Some(format!("`{}` takes: {}", k::name(node), PROPS.join(", ")));
                return Err(d);
            }
        }
    }
    Ok(r)
}

fn string_or_int(v: &KdlValue) -> Option<String> {
    match v {
        KdlValue::String(s) => Some(s.trim().to_string()),
        KdlValue::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `32G`, `500M`, `1024` (megabytes, as Slurm reads it) -> Slurm's form.
fn memory(text: &str) -> Option<String> {
    let upper = text.to_ascii_uppercase();
    let upper = upper.strip_suffix('B').unwrap_or(&upper);
    let (digits, unit) = match upper.char_indices().last()? {
        (i, c) if "KMGT".contains(c) => (&upper[..i], c.to_string()),
        _ => (upper, String::new()),
    };
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("{digits}{unit}"))
}

/// `4h`, `90m`, `30s`, `2d` -> minutes (rounded up); Slurm's own forms
/// (`240`, `4:00:00`, `1-12:00:00`) pass as they are.
fn wall_time(text: &str) -> Option<String> {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '-')
    {
        return Some(text.to_string());
    }
    let (num, unit) = text.split_at(text.len().checked_sub(1)?);
    let x: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x > 0.0)?;
    let minutes = match unit {
        "s" => x / 60.0,
        "m" => x,
        "h" => x * 60.0,
        "d" => x * 1440.0,
        _ => return None,
    };
    Some(format!("{}", minutes.ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_slurm_writes_them() {
        assert_eq!(memory("32G").as_deref(), Some("32G"));
        assert_eq!(memory("500mb").as_deref(), Some("500M"));
        assert_eq!(memory("1024").as_deref(), Some("1024"));
        assert_eq!(memory("lots"), None);
        assert_eq!(wall_time("4h").as_deref(), Some("240"));
        assert_eq!(wall_time("90s").as_deref(), Some("2"));
        assert_eq!(wall_time("1-12:00:00").as_deref(), Some("1-12:00:00"));
        assert_eq!(wall_time("soon"), None);
        let a = Requests {
            gpus: Some(1),
            ..Requests::default()
        };
        let b = Requests {
            gpus: Some(0),
            cpus: Some(4),
            ..Requests::default()
        };
        assert_eq!(a.or(&b).gpus, Some(1));
        assert_eq!(a.or(&b).cpus, Some(4));
    }
}
