//! Typed parameter values and their types.
//!
//! A value's canonical form (what is hashed into stage keys) is its serde form:
//! tagged by type, so `times 1` (int) and `lr 1.0` (float) never collide, and
//! an int written where a float is declared is stored as that float.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A parameter's value after type checking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    /// The plain JSON form handed to stage programs (`{"times": 2}`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// Short human form, as used in variant names (`b[times=2]`) and messages.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => {
                if !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
                    write!(f, "{s}")
                } else {
                    write!(f, "{s:?}")
                }
            }
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A declared parameter type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Int,
    Float,
    Bool,
    String,
    /// A file or folder, relative to the experiment file. Its *content* digest
    /// goes into the stage key, not its path.
    Path,
    List(Box<ParamType>),
}

impl ParamType {
    /// Parses `int`, `float`, `bool`, `string`, `path`, `list<T>` (also `[T]`).
    pub fn parse(text: &str) -> Option<ParamType> {
        let t = text.trim();
        let inner = t
            .strip_prefix("list<")
            .and_then(|r| r.strip_suffix('>'))
            .or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')));
        if let Some(inner) = inner {
            let elem = ParamType::parse(inner)?;
            if matches!(elem, ParamType::List(_)) {
                return None;
            }
            return Some(ParamType::List(Box::new(elem)));
        }
        match t {
            "int" => Some(ParamType::Int),
            "float" => Some(ParamType::Float),
            "bool" => Some(ParamType::Bool),
            "string" | "str" => Some(ParamType::String),
            "path" => Some(ParamType::Path),
            _ => None,
        }
    }
    pub fn is_list(&self) -> bool {
        matches!(self, ParamType::List(_))
    }
    pub fn mentions_path(&self) -> bool {
        match self {
            ParamType::Path => true,
            ParamType::List(e) => e.mentions_path(),
            _ => false,
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Int => f.write_str("int"),
            ParamType::Float => f.write_str("float"),
            ParamType::Bool => f.write_str("bool"),
            ParamType::String => f.write_str("string"),
            ParamType::Path => f.write_str("path"),
            ParamType::List(e) => write!(f, "list<{e}>"),
        }
    }
}

/// Converts one KDL scalar into a value of `ty` (a scalar type), or says what is wrong.
pub fn scalar_from_kdl(v: &kdl::KdlValue, ty: &ParamType) -> Result<Value, String> {
    use kdl::KdlValue as K;
    match (ty, v) {
        (ParamType::Int, K::Integer(i)) => i64::try_from(*i)
            .map(Value::Int)
            .map_err(|_| format!("{i} does not fit a 64-bit integer")),
        (ParamType::Float, K::Integer(i)) => Ok(Value::Float(*i as f64)),
        (ParamType::Float, K::Float(x)) if x.is_finite() => Ok(Value::Float(*x)),
        (ParamType::Float, K::Float(_)) => Err("expected a finite number".into()),
        (ParamType::Bool, K::Bool(b)) => Ok(Value::Bool(*b)),
        (ParamType::String | ParamType::Path, K::String(s)) => Ok(Value::Str(s.clone())),
        (ty, other) => Err(format!(
            "expected {} but found {}",
            ty_article(ty),
            describe_kdl(other)
        )),
    }
}

fn ty_article(ty: &ParamType) -> String {
    match ty {
        ParamType::Int => "an int".into(),
        ParamType::Float => "a float".into(),
        ParamType::Bool => "a bool (#true or #false)".into(),
        ParamType::String => "a string".into(),
        ParamType::Path => "a path (a string)".into(),
        ParamType::List(e) => format!("a list of {e}"),
    }
}

pub fn describe_kdl(v: &kdl::KdlValue) -> String {
    use kdl::KdlValue as K;
    match v {
        K::String(s) => format!("the string {s:?}"),
        K::Integer(i) => format!("the int {i}"),
        K::Float(x) => format!("the float {x}"),
        K::Bool(b) => format!("the bool #{b}"),
        K::Null => "#null".into(),
    }
}

/// Builds a value of type `ty` from a node's arguments: one argument for a
/// scalar, any number for a list.
pub fn value_from_args(args: &[&kdl::KdlValue], ty: &ParamType) -> Result<Value, (usize, String)> {
    match ty {
        ParamType::List(elem) => {
            let mut out = Vec::with_capacity(args.len());
            for (i, a) in args.iter().enumerate() {
                out.push(scalar_from_kdl(a, elem).map_err(|e| (i, e))?);
            }
            Ok(Value::List(out))
        }
        scalar => match args {
            [one] => scalar_from_kdl(one, scalar).map_err(|e| (0, e)),
            [] => Err((0, format!("missing value: expected {}", ty_article(scalar)))),
            _ => Err((
                1,
                format!(
                    "expected a single value ({}), found {}",
                    ty_article(scalar),
                    args.len()
                ),
            )),
        },
    }
}

/// Flat metrics written by stages (`metrics.json`).
pub type Metrics = BTreeMap<String, f64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types() {
        assert_eq!(
            ParamType::parse("list<int>"),
            Some(ParamType::List(Box::new(ParamType::Int)))
        );
        assert_eq!(
            ParamType::parse("[float]"),
            Some(ParamType::List(Box::new(ParamType::Float)))
        );
        assert_eq!(ParamType::parse("list<list<int>>"), None);
        assert_eq!(ParamType::parse("integer"), None);
    }

    #[test]
    fn int_widens_to_float_but_not_back() {
        let ty = ParamType::Float;
        assert_eq!(
            scalar_from_kdl(&kdl::KdlValue::Integer(2), &ty),
            Ok(Value::Float(2.0))
        );
        assert!(scalar_from_kdl(&kdl::KdlValue::Float(2.5), &ParamType::Int).is_err());
    }

    #[test]
    fn canonical_form_is_typed() {
        let a = serde_json::to_string(&Value::Int(1)).unwrap();
        let b = serde_json::to_string(&Value::Float(1.0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, r#"{"int":1}"#);
    }
}
