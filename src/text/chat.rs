//! Chat templates as transformers' `apply_chat_template` renders them: the
//! Jinja source from `chat_template.jinja` or `tokenizer_config.json`
//! (a string, or a list of named templates), rendered with transformers'
//! environment (trimmed blocks, `loopcontrols`, `raise_exception`,
//! `strftime_now`, a `tojson` that writes Python's `json.dumps`, Python's
//! string methods) over messages normalised as transformers normalises them.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

/// A tokenizer's chat template and the special tokens it is rendered with.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    /// Where it came from, for errors (`…/chat_template.jinja`).
    pub origin: String,
    /// `bos_token`, `eos_token`, ... as `tokenizer_config.json` names them.
    pub special_tokens: BTreeMap<String, String>,
}

/// A special token's text: a string, or an `AddedToken` object's `content`.
fn token_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// `tokenizer_config.json`'s `chat_template`: a string, or the `default`
/// (else the first) of a list of `{name, template}`.
fn template_field(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Array(items) => {
            let named = |n: &str| {
                items
                    .iter()
                    .find(|i| i.get("name").and_then(Json::as_str) == Some(n))
            };
            named("default")
                .or(items.first())
                .and_then(|i| i.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string)
        }
        _ => None,
    }
}

impl ChatTemplate {
    /// The template of a tokenizer folder: `chat_template.jinja` (what
    /// transformers 5 saves), else `tokenizer_config.json`'s field; `None`
    /// when there is neither (a base model).
    pub fn from_folder(dir: &Path) -> Result<Option<ChatTemplate>, String> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Json = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid JSON: {e}", config_path.display()))?,
            Err(_) => Json::Null,
        };
        let special_tokens = [
            "bos_token",
            "eos_token",
            "unk_token",
            "pad_token",
            "sep_token",
            "cls_token",
            "mask_token",
        ]
        .iter()
        .filter_map(|k| Some((k.to_string(), token_text(config.get(*k)?)?)))
        .collect();
        let file = dir.join("chat_template.jinja");
        let (source, origin) = if let Ok(text) = std::fs::read_to_string(&file) {
            (text, file.display().to_string())
        } else if let Some(t) = config.get("chat_template").and_then(template_field) {
            (t, format!("{} (chat_template)", config_path.display()))
        } else {
            return Ok(None);
        };
        Ok(Some(ChatTemplate {
            source,
            origin,
            special_tokens,
        }))
    }

    /// The text of one user message, ready for the assistant's reply
    /// (`add_generation_prompt=True`).
    pub fn render_prompt(&self, user: &str) -> Result<String, String> {
        let message = map(vec![
            (Value::from("role"), Value::from("user")),
            (Value::from("content"), Value::from(user)),
        ]);
        self.render(
            &Value::from(vec![message]),
            &Value::from(()),
            true,
            &Value::from(()),
        )
    }

    /// Renders `messages` (a list of maps), `tools` (a list or none), extra
    /// template variables `kwargs` (a map or none: `enable_thinking`, ...).
    pub fn render(
        &self,
        messages: &Value,
        tools: &Value,
        add_generation_prompt: bool,
        kwargs: &Value,
    ) -> Result<String, String> {
        let env = environment();
        let source = strip_generation_tags(&self.source);
        let template = env
            .template_from_named_str("chat_template", &source)
            .map_err(|e| self.error(&e))?;
        let mut ctx: BTreeMap<String, Value> = BTreeMap::from([
            ("messages".into(), normalise_messages(messages)),
            ("tools".into(), tools.clone()),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(add_generation_prompt),
            ),
        ]);
        ctx.extend(
            self.special_tokens
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str()))),
        );
        if let Ok(keys) = kwargs.try_iter() {
            for k in keys {
                let v = kwargs.get_item(&k).unwrap_or_default();
                ctx.insert(k.to_string(), v);
            }
        }
        template
            .render(Value::from(ctx))
            .map_err(|e| self.error(&e))
    }

    /// An error that points at the template's line.
    fn error(&self, e: &Error) -> String {
        template_error(&format!("chat template {}", self.origin), e)
    }
}

/// A template error as `WHAT line N: kind: detail`, pointing at the template's line.
pub fn template_error(what: &str, e: &Error) -> String {
    let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    format!("{what}{line}: {}{detail}", e.kind())
}

/// `{% generation %}` marks assistant text for transformers' mask; it
/// renders nothing itself.
fn strip_generation_tags(source: &str) -> String {
    let mut out = source.to_string();
    for tag in ["generation", "endgeneration"] {
        for dash in ["{%- ", "{% "] {
            for end in [" -%}", " %}"] {
                out = out.replace(&format!("{dash}{tag}{end}"), "");
            }
        }
    }
    out
}

/// Keys whose value is none are dropped; reasoning under any of its names
/// is offered as both `thinking` and `reasoning_content` (transformers').
fn normalise_messages(messages: &Value) -> Value {
    let Ok(items) = messages.try_iter() else {
        return messages.clone();
    };
    let normalised: Vec<Value> = items
        .map(|m| {
            if m.kind() != ValueKind::Map {
                return m;
            }
            let keys: Vec<Value> = m.try_iter().map(|k| k.collect()).unwrap_or_default();
            let field = |k: &Value| m.get_item(k).unwrap_or_default();
            let reasoning = ["reasoning_content", "thinking", "reasoning"]
                .iter()
                .map(|k| m.get_attr(k).unwrap_or_default())
                .find(|v| !v.is_none() && !v.is_undefined());
            let mut pairs: Vec<(Value, Value)> = Vec::new();
            if let Some(r) = &reasoning {
                pairs.push((Value::from("thinking"), r.clone()));
            }
            for k in keys {
                let v = field(&k);
                let replaced = reasoning.is_some() && k.as_str() == Some("thinking");
                if !v.is_none() && !replaced {
                    pairs.push((k, v));
                }
            }
            if let Some(r) = reasoning {
                pairs.retain(|(k, _)| k.as_str() != Some("reasoning_content"));
                pairs.push((Value::from("reasoning_content"), r));
            }
            map(pairs)
        })
        .collect();
    Value::from(normalised)
}

/// A map that keeps `pairs`' order (as a Python dict does: `tojson` shows it).
fn map(pairs: Vec<(Value, Value)>) -> Value {
    Value::from_pairs(pairs)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env.add_filter("tojson", tojson);
    env
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=...)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn dump(
    v: &Value,
    indent: Option<usize>,
    sort: bool,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(v)),
        ValueKind::String => {
            out.push_str(&serde_json::to_string(v.as_str().unwrap_or("")).unwrap_or_default())
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort {
                keys.sort_by_key(|k| k.to_string());
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                let name = k.as_str().map_or_else(|| k.to_string(), str::to_string);
                out.push_str(&serde_json::to_string(&name).unwrap_or_default());
                out.push_str(": ");
                dump(&v.get_item(k)?, indent, sort, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                dump(item, indent, sort, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
    }
    Ok(())
}

/// A number as Python's `repr` writes it (`1.0` for a whole float, `1e-05`).
fn python_number(v: &Value) -> String {
    let text = v.to_string();
    let Ok(f) = f64::try_from(v.clone()) else {
        return text;
    };
    if v.as_i64().is_some() && !text.contains('.') {
        return text;
    }
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python: shortest digits, exponent with a sign and two digits at least.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = exp.parse().unwrap_or(0);
        return format!("{mantissa}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// `datetime.now().strftime(fmt)` for the directives chat templates use
/// (UTC; `%d %b %B %Y %m %y %H %M %S %a %A %j %%`).
fn strftime_now(fmt: &str) -> Result<String, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(strftime(secs, fmt))
}

fn strftime(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_writes_the_dates_llama_templates_ask_for() {
        // 2024-07-23 00:00:00 UTC was a Tuesday, day 205 of a leap year.
        let t = 1_721_692_800;
        assert_eq!(strftime(t, "%d %b %Y"), "23 Jul 2024");
        assert_eq!(
            strftime(t + 3723, "%A %B %j %H:%M:%S %y %m %%"),
            "Tuesday July 205 01:02:03 24 07 %"
        );
        assert_eq!(strftime(0, "%d %b %Y %a"), "01 Jan 1970 Thu");
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, 2.5, "é\n", null, true], "a": {}, "c": 1e-05}"#)
                .unwrap();
        let kwargs = Kwargs::from_iter(Vec::<(&str, Value)>::new());
        let out = tojson(&v, kwargs).unwrap().to_string();
        assert_eq!(
            out,
            r#"{"b": [1, 2.5, "é\n", null, true], "a": {}, "c": 1e-05}"#
        );
        let kwargs = Kwargs::from_iter([("indent", Value::from(2))]);
        let v = map(vec![(Value::from("k"), Value::from(vec![1, 2]))]);
        let out = tojson(&v, kwargs).unwrap().to_string();
        assert_eq!(out, "{\n  \"k\": [\n    1,\n    2\n  ]\n}");
    }
}
