//! One loader per source format. Each reads files as published and returns
//! normalized products, or row errors that name the file and line.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::stages::formats::dataset::{
    Candidate, Category, DOMAIN_KEYS, Preference, Product, normalize_split,
};

/// The sources a dataset stage understands.
pub const SOURCES: &[&str] = &[
    "opinpref",
    "prompt-opin-summ",
    "copycat-amazon",
    "fewsum",
    "oposum-plus",
    "summeval-op",
    "jsonl",
    "csv",
];

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The file.
    pub file: PathBuf,
    /// Its line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Field names for the generic `jsonl` and `csv` sources.
#[derive(Debug, Clone)]
pub struct FieldMap {
    /// The field holding the product id.
    pub id: String,
    /// Fields holding reviews.
    pub reviews: Vec<String>,
    /// Fields holding reference summaries.
    pub references: Vec<String>,
    /// The field holding the split (empty: from the file name).
    pub split: String,
    /// CSV column separator.
    pub delimiter: u8,
}

impl Default for FieldMap {
    fn default() -> FieldMap {
        FieldMap {
            id: "id".into(),
            reviews: vec!["reviews".into()],
            references: vec![],
            split: String::new(),
            delimiter: b',',
        }
    }
}

#[derive(Debug, Default)]
/// What a source yields: products, and the rows skipped without `strict`.
pub struct Loaded {
    /// The products read.
    pub products: Vec<Product>,
    /// Rows that could not be read.
    pub skipped: Vec<RowError>,
}

/// Collects rows: in strict mode the first bad row is the error, else it is counted.
/// A product id appearing twice is a bad row: every later stage tells
/// products apart by id.
struct Collector {
    strict: bool,
    out: Loaded,
    /// Where each product id was first read.
    seen: HashMap<String, (PathBuf, usize)>,
}

impl Collector {
    fn row(&mut self, file: &Path, line: usize, r: Result<Product, String>) -> Result<(), String> {
        let r = r.and_then(|p| match self.seen.get(&p.id) {
            Some((f, l)) => Err(format!(
                "duplicate product id `{}` (first at {}:{l})",
                p.id,
                f.display()
            )),
            None => Ok(p),
        });
        match r {
            Ok(p) => {
                self.seen.insert(p.id.clone(), (file.to_path_buf(), line));
                self.out.products.push(p);
                Ok(())
            }
            Err(message) => {
                let e = RowError {
                    file: file.to_path_buf(),
                    line,
                    message,
                };
                if self.strict {
                    Err(format!(
                        "{e}\n  help: fix the row, or set `strict #false` on the stage to skip bad rows (they are counted)"
                    ))
                } else {
                    self.out.skipped.push(e);
                    Ok(())
                }
            }
        }
    }
}

/// Loads `source` from `path`.
pub fn load(source: &str, path: &Path, strict: bool, fields: &FieldMap) -> Result<Loaded, String> {
    let mut c = Collector {
        strict,
        out: Loaded::default(),
        seen: HashMap::new(),
    };
    match source {
        "opinpref" => jsonl_source(
            path,
            &[
                "annotations-train.jsonl",
                "annotations-valid.jsonl",
                "opin-pref.jsonl",
            ],
            opinpref_row,
            &mut c,
        )?,
        "prompt-opin-summ" => jsonl_source(
            path,
            &[
                "prompt-opin-summ-train.jsonl",
                "prompt-opin-summ-valid.jsonl",
                "prompt-opin-summ-test.jsonl",
            ],
            prompt_opin_summ_row,
            &mut c,
        )?,
        "copycat-amazon" => for_files(path, &["dev.csv", "test.csv"], |f, split| {
            tsv_rows(f, b'\t', |line, rec| {
                c.row(
                    f,
                    line,
                    rec.and_then(|r| {
                        review_table_row(&r, "copycat-amazon", split, "prod_id", None)
                    }),
                )
            })
        })?,
        "fewsum" => load_fewsum(path, &mut c)?,
        "oposum-plus" => load_oposum(path, &mut c)?,
        "summeval-op" => {
            let f = if path.is_dir() {
                path.join("summeval-op.jsonl")
            } else {
                path.to_path_buf()
            };
            let mut i = 0;
            jsonl_rows(&f, |line, v| {
                i += 1;
                let id = format!("summeval-op-{i}");
                c.row(&f, line, v.and_then(|v| summeval_row(&v, id)))
            })?
        }
        "jsonl" => {
            let split = split_of(path);
            jsonl_rows(path, |line, v| {
                c.row(
                    path,
                    line,
                    v.and_then(|v| generic_row(&v, fields, &split, line)),
                )
            })?
        }
        "csv" => {
            let split = split_of(path);
            tsv_rows(path, fields.delimiter, |line, rec| {
                c.row(
                    path,
                    line,
                    rec.and_then(|r| {
                        let obj: serde_json::Map<String, Json> =
                            r.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
                        generic_row(&Json::Object(obj), fields, &split, line)
                    }),
                )
            })?
        }
        other => {
            return Err(format!(
                "unknown source `{other}`; sources: {}",
                SOURCES.join(", ")
            ));
        }
    }
    if c.out.products.is_empty() && c.out.skipped.is_empty() {
        return Err(format!(
            "no products in `{}`: the source's files hold no rows",
            path.display()
        ));
    }
    Ok(c.out)
}

/// A source of JSONL files (or one file) whose rows `row` turns into products.
fn jsonl_source(
    path: &Path,
    names: &[&str],
    row: fn(&Json, &str) -> Result<Product, String>,
    c: &mut Collector,
) -> Result<(), String> {
    for_files(path, names, |f, split| {
        jsonl_rows(f, |line, v| c.row(f, line, v.and_then(|v| row(&v, split))))
    })
}

/// The split a file's name implies (`annotations-valid.jsonl` -> validation).
fn split_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    for part in stem.split(['-', '_', '.']).rev() {
        let s = normalize_split(part);
        if ["train", "validation", "test"].contains(&s.as_str()) {
            return s;
        }
    }
    "unsplit".into()
}

/// Calls `each` for the known files present in folder `path`, or for `path` itself if it is a file.
fn for_files(
    path: &Path,
    names: &[&str],
    mut each: impl FnMut(&Path, &str) -> Result<(), String>,
) -> Result<(), String> {
    if path.is_file() {
        return each(path, &split_of(path));
    }
    let mut found = false;
    for name in names {
        let f = path.join(name);
        if f.is_file() {
            found = true;
            each(&f, &split_of(&f))?;
        }
    }
    if !found {
        return Err(format!(
            "`{}` holds none of the expected files: {}",
            path.display(),
            names.join(", ")
        ));
    }
    Ok(())
}

/// Each non-empty line of a JSONL file, parsed. A UTF-8 byte-order mark is
/// skipped; a line that is not UTF-8 is a row error naming its column.
fn jsonl_rows(
    path: &Path,
    mut each: impl FnMut(usize, Result<Json, String>) -> Result<(), String>,
) -> Result<(), String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let row = match std::str::from_utf8(raw) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}")),
            Err(e) => Err(format!(
                "not UTF-8 at column {} (byte 0x{:02x})",
                String::from_utf8_lossy(&raw[..e.valid_up_to()])
                    .chars()
                    .count()
                    + 1,
                raw[e.valid_up_to()]
            )),
        };
        each(i + 1, row)?;
    }
    Ok(())
}

/// Rows of a delimited file with a header, as (column -> value).
fn tsv_rows(
    path: &Path,
    delimiter: u8,
    mut each: impl FnMut(usize, Result<Vec<(String, String)>, String>) -> Result<(), String>,
) -> Result<(), String> {
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_path(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| format!("{}: bad header: {e}", path.display()))?
        .iter()
        .map(str::to_string)
        .collect();
    for rec in rd.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
                if r.len() != header.len() {
                    each(
                        line,
                        Err(format!(
                            "{} columns, the header has {}",
                            r.len(),
                            header.len()
                        )),
                    )?;
                    continue;
                }
                each(
                    line,
                    Ok(header
                        .iter()
                        .cloned()
                        .zip(r.iter().map(str::to_string))
                        .collect()),
                )?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                each(line, Err(format!("unreadable row: {e}")))?;
            }
        }
    }
    Ok(())
}

fn field<'a>(v: &'a Json, key: &str) -> Result<&'a Json, String> {
    v.get(key).ok_or_else(|| format!("missing field `{key}`"))
}

fn string(v: &Json, key: &str) -> Result<String, String> {
    match field(v, key)? {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        other => Err(format!("`{key}` must be a string, found {}", kind(other))),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

fn reviews_list(v: &Json, key: &str) -> Result<Vec<String>, String> {
    let list = match field(v, key)? {
        Json::Array(items) => items
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    format!("`{key}` must be a list of strings, found {} in it", kind(x))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "`{key}` must be a list of strings, found {}",
                kind(other)
            ));
        }
    };
    nonempty_reviews(list, key)
}

fn nonempty_reviews(list: Vec<String>, key: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = list.into_iter().filter(|r| !r.trim().is_empty()).collect();
    if list.is_empty() {
        return Err(format!(
            "`{key}` is empty: a product needs at least one review"
        ));
    }
    Ok(list)
}

fn domain_scores(v: &Json, key: &str) -> Result<BTreeMap<String, f64>, String> {
    let obj = match field(v, key)? {
        Json::Object(o) => o,
        other => {
            return Err(format!(
                "`{key}` must be an object of the seven scores, found {}",
                kind(other)
            ));
        }
    };
    let mut out = BTreeMap::new();
    for k in DOMAIN_KEYS {
        let x = obj
            .get(k)
            .ok_or_else(|| format!("`{key}` lacks the score `{k}`"))?;
        let x = x
            .as_f64()
            .ok_or_else(|| format!("score `{k}` must be a number, found {}", kind(x)))?;
        out.insert(k.to_string(), x);
    }
    Ok(out)
}

fn opinpref_row(v: &Json, split: &str) -> Result<Product, String> {
    let id = string(v, "unique-id")?;
    let reviews = reviews_list(v, "reviews")?;
    let pairs = field(v, "summary-pairs")?;
    let mut candidates = Vec::new();
    for which in ["summary-one", "summary-two"] {
        let s = field(pairs, which).map_err(|e| format!("`summary-pairs`: {e}"))?;
        let text = string(s, "summary-text").map_err(|e| format!("`{which}`: {e}"))?;
        if text.trim().is_empty() {
            return Err(format!("`{which}` has an empty summary"));
        }
        let index = string(s, "index")
            .ok()
            .and_then(|i| i.trim().parse::<u32>().ok());
        let scores = domain_scores(s, "summary-score").map_err(|e| format!("`{which}`: {e}"))?;
        candidates.push(Candidate {
            text,
            scores: Some(scores),
            category: index.and_then(Category::from_index),
            system: None,
            index,
            human: None,
        });
    }
    let pref = field(v, "preference-data")?
        .as_i64()
        .ok_or("`preference-data` must be 1 or 2")?;
    let (preferred, rejected) = match pref {
        1 => (0, 1),
        2 => (1, 0),
        other => return Err(format!("`preference-data` must be 1 or 2, found {other}")),
    };
    let annotator = v.get("source").and_then(|s| s.as_str()).map(str::to_string);
    Ok(Product {
        id,
        source: "opinpref".into(),
        split: split.into(),
        domain: None,
        reviews,
        review_ratings: vec![],
        references: vec![],
        aspect_references: BTreeMap::new(),
        candidates,
        preferences: vec![Preference {
            preferred,
            rejected,
            annotator,
        }],
    })
}

fn prompt_opin_summ_row(v: &Json, split: &str) -> Result<Product, String> {
    let id = string(v, "unique-id")?;
    let reviews = reviews_list(v, "reviews")?;
    let Json::Array(items) = field(v, "summaries")? else {
        return Err("`summaries` must be a list".into());
    };
    let mut candidates = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let text = string(s, "summary_text").map_err(|e| format!("summary {i}: {e}"))?;
        let scores = domain_scores(s, "score").map_err(|e| format!("summary {i}: {e}"))?;
        let flag = |k: &str| s.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
        let category = match (flag("is-good"), flag("is-sbad"), flag("is-vbad")) {
            (true, false, false) => Some(Category::Good),
            (false, true, false) => Some(Category::SlightlyBad),
            (false, false, true) => Some(Category::VeryBad),
            (false, false, false) => Category::from_index(i as u32),
            _ => {
                return Err(format!(
                    "summary {i} has more than one of is-good, is-sbad, is-vbad"
                ));
            }
        };
        candidates.push(Candidate {
            text,
            scores: Some(scores),
            category,
            system: Some("mistral-7b-instruct".into()),
            index: Some(i as u32),
            human: None,
        });
    }
    if candidates.is_empty() {
        return Err("`summaries` is empty".into());
    }
    Ok(Product {
        id,
        source: "prompt-opin-summ".into(),
        split: split.into(),
        domain: None,
        reviews,
        review_ratings: vec![],
        references: vec![],
        aspect_references: BTreeMap::new(),
        candidates,
        preferences: vec![],
    })
}

/// A row of the Copycat/FewSum tables: rev1..8, summ1..3, optional rating1..8.
fn review_table_row(
    r: &[(String, String)],
    source: &str,
    split: &str,
    id_col: &str,
    extra: Option<Candidate>,
) -> Result<Product, String> {
    let get = |k: &str| r.iter().find(|(c, _)| c == k).map(|(_, v)| v.clone());
    let id = get(id_col).ok_or_else(|| format!("missing column `{id_col}`"))?;
    let numbered = |prefix: &str| -> Vec<(usize, String)> {
        let mut v: Vec<(usize, String)> = r
            .iter()
            .filter_map(|(c, val)| {
                c.strip_prefix(prefix)
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| (n, val.clone()))
            })
            .collect();
        v.sort_by_key(|(n, _)| *n);
        v
    };
    let reviews = nonempty_reviews(
        numbered("rev").into_iter().map(|(_, v)| v).collect(),
        "rev1..rev8",
    )?;
    let references: Vec<String> = numbered("summ")
        .into_iter()
        .map(|(_, v)| v)
        .filter(|s| !s.trim().is_empty())
        .collect();
    let review_ratings = numbered("rating")
        .into_iter()
        .map(|(n, v)| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("`rating{n}` is not a number: {v:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Product {
        id,
        source: source.into(),
        split: split.into(),
        domain: get("cat"),
        reviews,
        review_ratings,
        references,
        aspect_references: BTreeMap::new(),
        candidates: extra.into_iter().collect(),
        preferences: vec![],
    })
}

/// FewSum: `gold_summs/{train,val,test}.csv` and the model's `gen_summs/{val,test}.json`.
/// `path` is one dataset (`fewsum/amazon`) or the folder holding `amazon` and `yelp`.
fn load_fewsum(path: &Path, c: &mut Collector) -> Result<(), String> {
    let roots: Vec<PathBuf> = if path.join("gold_summs").is_dir() {
        vec![path.to_path_buf()]
    } else {
        ["amazon", "yelp"]
            .iter()
            .map(|d| path.join(d))
            .filter(|p| p.join("gold_summs").is_dir())
            .collect()
    };
    if roots.is_empty() {
        return Err(format!(
            "`{}` has no `gold_summs` folder (nor `amazon/` or `yelp/` with one)",
            path.display()
        ));
    }
    for root in roots {
        for (file, split) in [("train", "train"), ("val", "validation"), ("test", "test")] {
            let f = root.join("gold_summs").join(format!("{file}.csv"));
            if !f.is_file() {
                continue;
            }
            let generated = fewsum_generated(&root.join("gen_summs").join(format!("{file}.json")))?;
            tsv_rows(&f, b'\t', |line, rec| {
                let r = rec.and_then(|r| {
                    let id = r
                        .iter()
                        .find(|(k, _)| k == "group_id")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    let extra = generated.get(&id).map(|t| Candidate {
                        system: Some("fewsum".into()),
                        ..Candidate::text(t.clone())
                    });
                    review_table_row(&r, "fewsum", split, "group_id", extra)
                });
                c.row(&f, line, r)
            })?;
        }
    }
    Ok(())
}

/// group_id -> the FewSum model's summary (sentences joined by spaces).
fn fewsum_generated(path: &Path) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let v: Json = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
    let Json::Object(cats) = v else {
        return Err(format!(
            "{}: expected an object of categories",
            path.display()
        ));
    };
    for (cat, groups) in cats {
        if cat.starts_with('<') {
            continue;
        }
        let Json::Object(groups) = groups else {
            continue;
        };
        for (gid, entry) in groups {
            let sentences: Vec<String> = entry
                .get("gen_summ")
                .and_then(|g| g.as_array())
                .and_then(|outer| outer.first())
                .and_then(|first| first.as_array())
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if !sentences.is_empty() {
                out.insert(gid, sentences.join(" "));
            }
        }
    }
    Ok(out)
}

/// Oposum+ domains in the order the AceSum outputs follow.
pub const OPOSUM_DOMAINS: [&str; 6] = ["bag", "boots", "bt", "keyboard", "tv", "vacuum"];

fn load_oposum(path: &Path, c: &mut Collector) -> Result<(), String> {
    let acesum_file = path.join("baseline_outputs").join("acesum.general.out.txt");
    let acesum: Vec<String> = std::fs::read_to_string(&acesum_file)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let mut found = false;
    for (file, split) in [("dev", "validation"), ("test", "test")] {
        let mut position = 0;
        for domain in OPOSUM_DOMAINS {
            let f = path.join(domain).join(format!("{file}.json"));
            if !f.is_file() {
                continue;
            }
            found = true;
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
            let v: Json = serde_json::from_str(&text)
                .map_err(|e| format!("{}:1: invalid JSON: {e}", f.display()))?;
            let Json::Array(items) = v else {
                return Err(format!("{}:1: expected a list of products", f.display()));
            };
            for (i, item) in items.iter().enumerate() {
                let extra = (split == "test")
                    .then(|| acesum.get(position).cloned())
                    .flatten();
                position += 1;
                let r = oposum_product(item, domain, split, i, extra);
                // The files hold one JSON list; rows are numbered by product.
                c.row(&f, i + 1, r)?;
            }
        }
    }
    if !found {
        return Err(format!(
            "`{}` holds none of `<domain>/dev.json`, `<domain>/test.json` for {}",
            path.display(),
            OPOSUM_DOMAINS.join(", ")
        ));
    }
    Ok(())
}

fn oposum_product(
    v: &Json,
    domain: &str,
    split: &str,
    i: usize,
    acesum: Option<String>,
) -> Result<Product, String> {
    let Json::Array(revs) = field(v, "reviews")? else {
        return Err("`reviews` must be a list".into());
    };
    let mut reviews = Vec::new();
    for r in revs {
        let sentences: Vec<&str> = r
            .get("sentences")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        reviews.push(sentences.join(" "));
    }
    let reviews = nonempty_reviews(reviews, "reviews")?;
    let Json::Object(summaries) = field(v, "summaries")? else {
        return Err("`summaries` must be an object".into());
    };
    let mut references = Vec::new();
    let mut aspect_references = BTreeMap::new();
    for (aspect, list) in summaries {
        let texts: Vec<String> = list
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if aspect == "general" {
            references = texts;
        } else {
            aspect_references.insert(aspect.clone(), texts);
        }
    }
    let split_tag = if split == "validation" { "dev" } else { split };
    Ok(Product {
        id: format!("{domain}-{split_tag}-{i}"),
        source: "oposum-plus".into(),
        split: split.into(),
        domain: Some(domain.into()),
        reviews,
        review_ratings: vec![],
        references,
        aspect_references,
        candidates: acesum
            .map(|t| Candidate {
                system: Some("acesum".into()),
                ..Candidate::text(t)
            })
            .into_iter()
            .collect(),
        preferences: vec![],
    })
}

/// SummEval-OP dimension names in our kebab-case.
fn kebab(name: &str) -> String {
    name.to_ascii_lowercase().replace(' ', "-")
}

fn summeval_row(v: &Json, id: String) -> Result<Product, String> {
    let Json::Object(revs) = field(v, "reviews")? else {
        return Err("`reviews` must be an object rev1..rev8".into());
    };
    let mut numbered: Vec<(usize, String)> = revs
        .iter()
        .filter_map(|(k, x)| {
            k.strip_prefix("rev")
                .and_then(|n| n.parse().ok())
                .zip(x.as_str().map(str::to_string))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let reviews = nonempty_reviews(numbered.into_iter().map(|(_, r)| r).collect(), "reviews")?;
    let Json::Object(systems) = field(v, "summaries")? else {
        return Err("`summaries` must be an object".into());
    };
    let mut candidates = Vec::new();
    let mut references = Vec::new();
    for (system, s) in systems {
        let text = string(s, "summary").map_err(|e| format!("system `{system}`: {e}"))?;
        let human: BTreeMap<String, f64> = s
            .get("dimensions")
            .and_then(|d| d.as_object())
            .map(|d| {
                d.iter()
                    .filter_map(|(k, x)| x.as_f64().map(|x| (kebab(k), x)))
                    .collect()
            })
            .unwrap_or_default();
        if system == "human-summaries" {
            references.push(text.clone());
        }
        candidates.push(Candidate {
            system: Some(system.clone()),
            human: Some(human),
            ..Candidate::text(text)
        });
    }
    Ok(Product {
        id,
        source: "summeval-op".into(),
        split: "test".into(),
        domain: None,
        reviews,
        review_ratings: vec![],
        references,
        aspect_references: BTreeMap::new(),
        candidates,
        preferences: vec![],
    })
}

/// A generic row: `fields.reviews` and `fields.references` each name a list
/// of strings or a single string; all are collected in order.
fn generic_row(
    v: &Json,
    fields: &FieldMap,
    file_split: &str,
    line: usize,
) -> Result<Product, String> {
    let id = if v.get(&fields.id).is_some() {
        string(v, &fields.id)?
    } else {
        format!("row-{line}")
    };
    let collect = |names: &[String], required: bool| -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for name in names {
            match v.get(name) {
                Some(Json::String(s)) => out.push(s.clone()),
                Some(Json::Array(items)) => {
                    for x in items {
                        out.push(
                            x.as_str()
                                .ok_or_else(|| {
                                    format!("`{name}` must hold strings, found {}", kind(x))
                                })?
                                .to_string(),
                        );
                    }
                }
                Some(other) => {
                    return Err(format!(
                        "`{name}` must be a string or a list of strings, found {}",
                        kind(other)
                    ));
                }
                None if required => return Err(format!("missing field `{name}`")),
                None => {}
            }
        }
        Ok(out)
    };
    let reviews = nonempty_reviews(collect(&fields.reviews, true)?, &fields.reviews.join(", "))?;
    let references = collect(&fields.references, false)?
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    let split = if fields.split.is_empty() {
        file_split.to_string()
    } else {
        normalize_split(&string(v, &fields.split)?)
    };
    Ok(Product {
        id,
        source: "custom".into(),
        split,
        domain: None,
        reviews,
        review_ratings: vec![],
        references,
        aspect_references: BTreeMap::new(),
        candidates: vec![],
        preferences: vec![],
    })
}
