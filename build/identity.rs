//! The source identity of the built-in stage kinds, computed at build time.
//!
//! A built-in kind's results are a function of its code: the module that
//! implements it, every module of this crate that module uses (transitively),
//! the files they embed (`include_str!`), and the locked versions of the
//! crates they name together with those crates' own dependencies. This file
//! scans `src/` into a module graph and folds each module's closure into one
//! digest, so nothing has to be bumped by hand.
//!
//! - **Modules** are files (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`).
//!   A module uses another when one of its paths resolves there: `crate::`,
//!   `super::`, `self::` and child-module paths, use trees included, each
//!   resolved to the longest prefix that names a module. Naming a module's
//!   re-export (`pub use child::X`) therefore reaches the child.
//! - **Digests** are over tokens, not text: comments, doc comments, layout
//!   and `#[cfg(test)]` items change nothing.
//! - **Method calls** resolve through types, not paths; they are covered as
//!   long as every `impl` lives in the module that defines its type or its
//!   trait. [`misplaced_impls`] lists the ones that do not (a test keeps that
//!   list empty).
//! - **Crates** are resolved in `Cargo.lock` (parsed here line by line: the
//!   format cargo writes is flat `[[package]]` tables) from the root
//!   package's direct dependencies through their own.
//!
//! Shared by `build.rs` (which writes the table the binary embeds) and the
//! tests (which run it over fixture trees).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// One source file of the crate.
#[derive(Debug, Clone, Default)]
pub struct Module {
    /// Relative to the crate root, with `/` separators (`src/stages/ppo.rs`).
    pub file: String,
    /// blake3 of the normalized tokens and of every embedded file.
    pub digest: String,
    /// Modules this one names (module paths, `a::b`).
    pub uses: BTreeSet<String>,
    /// External crates this one names (as written in code: `serde_json`).
    pub crates: BTreeSet<String>,
    /// Files embedded with `include_str!`/`include_bytes!` (relative to the crate root), with their digests.
    pub embeds: BTreeMap<String, String>,
    /// Types and traits defined here.
    pub defines: BTreeSet<String>,
    /// `impl` blocks here: (trait, type), by last path segment.
    pub impls: Vec<(Option<String>, String)>,
}

/// Every module of a crate, by module path (`""` is the crate root).
#[derive(Debug, Clone, Default)]
pub struct SourceTree {
    pub modules: BTreeMap<String, Module>,
}

/// One locked package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The registry checksum, or the source for path and git packages.
    pub checksum: String,
    /// As written: `name` or `name version` (or with the source after).
    pub dependencies: Vec<String>,
}

/// The packages of a `Cargo.lock`.
#[derive(Debug, Clone, Default)]
pub struct Lock {
    pub packages: Vec<Package>,
}

/// What a module's results depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub module: String,
    pub digest: String,
    /// Source files and embedded files, with their digests (`file digest`).
    pub files: Vec<String>,
    /// Locked packages (`name version`).
    pub crates: Vec<String>,
}

/// Scans every `.rs` file below `root/src` except `main.rs` (the binary's
/// entry point is not part of the library any kind runs).
pub fn scan(root: &Path, crate_names: &BTreeSet<String>) -> Result<SourceTree, String> {
    let src = root.join("src");
    let mut files = Vec::new();
    collect_rs(&src, &mut files)?;
    let mut tree = SourceTree::default();
    let mut parsed = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&src)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .replace('\\', "/");
        let Some(module) = module_path(&rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let tokens = TokenStream::from_str(&text)
            .map_err(|e| format!("cannot lex {}: {e:?}", path.display()))?;
        let file = format!("src/{rel}");
        tree.modules.insert(
            module.clone(),
            Module {
                file,
                ..Module::default()
            },
        );
        parsed.push((module, path, tokens));
    }
    for (module, path, tokens) in parsed {
        let toks = without_doc_and_tests(tokens);
        let mut norm = String::new();
        normalize(&toks, &mut norm);
        let mut refs = Refs::default();
        walk(&toks, &mut refs);
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut hasher = blake3::Hasher::new();
        hasher.update(norm.as_bytes());
        let mut embeds = BTreeMap::new();
        for inc in &refs.includes {
            let p = dir.join(inc);
            let bytes =
                std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let rel = relative(root, &p);
            let digest = blake3::hash(&bytes).to_hex().to_string();
            hasher.update(format!("\nembed {rel} {digest}").as_bytes());
            embeds.insert(rel, digest);
        }
        let mut uses = BTreeSet::new();
        let mut crates = BTreeSet::new();
        for segs in &refs.paths {
            match tree.resolve(&module, segs, crate_names) {
                Some(Target::Module(m)) if m != module => {
                    uses.insert(m);
                }
                Some(Target::Crate(c)) => {
                    crates.insert(c);
                }
                _ => {}
            }
        }
        let m = tree.modules.get_mut(&module).ok_or("module vanished")?;
        m.digest = hasher.finalize().to_hex().to_string();
        m.uses = uses;
        m.crates = crates;
        m.embeds = embeds;
        m.defines = refs.defines;
        m.impls = refs.impls;
    }
    Ok(tree)
}

/// `a/b.rs` and `a/b/mod.rs` -> `a::b`; `lib.rs` -> the root; `main.rs` and `bin/` -> none.
fn module_path(rel: &str) -> Option<String> {
    if rel == "main.rs" || rel.starts_with("bin/") {
        return None;
    }
    if rel == "lib.rs" {
        return Some(String::new());
    }
    let stem = rel.strip_suffix(".rs")?;
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    Some(stem.replace('/', "::"))
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_rs(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

fn relative(root: &Path, p: &Path) -> String {
    // `a/b/../c` -> `a/c`, without touching the filesystem.
    let mut parts: Vec<String> = Vec::new();
    let rel = p.strip_prefix(root).unwrap_or(p);
    for c in rel.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

enum Target {
    Module(String),
    Crate(String),
}

impl SourceTree {
    /// What a path written in `module` names, if it is this crate's or a dependency's.
    fn resolve(&self, module: &str, segs: &[String], crates: &BTreeSet<String>) -> Option<Target> {
        let here: Vec<&str> = if module.is_empty() {
            vec![]
        } else {
            module.split("::").collect()
        };
        let first = segs.first()?.as_str();
        let (base, rest): (Vec<&str>, &[String]) = match first {
            "crate" => (vec![], &segs[1..]),
            "self" => (here.clone(), &segs[1..]),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let keep = here.len().checked_sub(ups)?;
                (here[..keep].to_vec(), &segs[ups..])
            }
            name if self.modules.contains_key(&join(&here, &[name])) => (here.clone(), segs),
            name if crates.contains(name) => return Some(Target::Crate(name.to_string())),
            _ => return None,
        };
        for k in (0..=rest.len()).rev() {
            let names: Vec<&str> = rest[..k].iter().map(String::as_str).collect();
            let cand = join(&base, &names);
            if self.modules.contains_key(&cand) {
                // The root only declares modules: naming it names nothing.
                return (!cand.is_empty()).then_some(Target::Module(cand));
            }
        }
        None
    }

    /// Every module `module` reaches, itself included, in order.
    pub fn closure(&self, module: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![module.to_string()];
        while let Some(m) = stack.pop() {
            if let Some(info) = self.modules.get(&m)
                && seen.insert(m)
            {
                stack.extend(info.uses.iter().cloned());
            }
        }
        seen
    }

    /// `impl` blocks that a user of their type or trait may not reach, as
    /// `(module, trait, type)`: an impl must live in a module that the
    /// defining module of its type or of its trait reaches (itself included),
    /// or its methods could escape the module graph. Names are matched among
    /// the types and traits this crate defines.
    pub fn misplaced_impls(&self) -> Vec<(String, Option<String>, String)> {
        let definers = |name: &str| -> Vec<&String> {
            self.modules
                .iter()
                .filter(|(_, m)| m.defines.contains(name))
                .map(|(p, _)| p)
                .collect()
        };
        let mut out = Vec::new();
        for (path, m) in &self.modules {
            for (tr, ty) in &m.impls {
                let mut owners = definers(ty);
                if let Some(t) = tr {
                    owners.extend(definers(t));
                }
                let reached = owners.iter().any(|d| self.closure(d).contains(path));
                if !owners.is_empty() && !reached {
                    out.push((path.clone(), tr.clone(), ty.clone()));
                }
            }
        }
        out
    }
}

fn join(base: &[&str], more: &[&str]) -> String {
    base.iter()
        .chain(more)
        .copied()
        .collect::<Vec<_>>()
        .join("::")
}

/// What a token stream mentions.
#[derive(Default)]
struct Refs {
    paths: Vec<Vec<String>>,
    includes: Vec<String>,
    defines: BTreeSet<String>,
    impls: Vec<(Option<String>, String)>,
}

/// The tokens without doc attributes and without `#[cfg(test)]` items, at every depth.
fn without_doc_and_tests(ts: TokenStream) -> Vec<TokenTree> {
    let toks: Vec<TokenTree> = ts.into_iter().collect();
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        match attribute_at(&toks, i) {
            Some((len, Attr::Doc)) => {
                i += len;
                continue;
            }
            Some((len, Attr::CfgTest)) => {
                i = skip_item(&toks, i + len);
                continue;
            }
            _ => {}
        }
        out.push(match &toks[i] {
            TokenTree::Group(g) => {
                let inner: TokenStream = without_doc_and_tests(g.stream()).into_iter().collect();
                TokenTree::Group(proc_macro2::Group::new(g.delimiter(), inner))
            }
            t => t.clone(),
        });
        i += 1;
    }
    out
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Attr {
    Doc,
    CfgTest,
    Other,
}

/// An attribute (`#[..]` or `#![..]`) starting at `i`: its token count and what it is.
fn attribute_at(toks: &[TokenTree], i: usize) -> Option<(usize, Attr)> {
    let TokenTree::Punct(p) = &toks[i] else {
        return None;
    };
    if p.as_char() != '#' {
        return None;
    }
    let bang = matches!(toks.get(i + 1), Some(TokenTree::Punct(q)) if q.as_char() == '!');
    let at = i + 1 + usize::from(bang);
    let Some(TokenTree::Group(g)) = toks.get(at) else {
        return None;
    };
    if g.delimiter() != Delimiter::Bracket {
        return None;
    }
    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
    let what = match inner.as_slice() {
        [TokenTree::Ident(d), ..] if d == "doc" => Attr::Doc,
        [TokenTree::Ident(c), TokenTree::Group(args)]
            if c == "cfg" && args.stream().to_string() == "test" =>
        {
            Attr::CfgTest
        }
        _ => Attr::Other,
    };
    Some((at + 1 - i, what))
}

/// Skips one item from `i`: further attributes, then up to its body or `;`.
fn skip_item(toks: &[TokenTree], mut i: usize) -> usize {
    while i < toks.len() {
        match attribute_at(toks, i) {
            Some((len, _)) => i += len,
            None => break,
        }
    }
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => return i + 1,
            TokenTree::Punct(p) if p.as_char() == ';' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Canonical text of tokens: one space between tokens, none inside joint punctuation.
fn normalize(toks: &[TokenTree], out: &mut String) {
    for t in toks {
        match t {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                normalize(&inner, out);
                out.push_str(close);
                out.push(' ');
            }
            TokenTree::Ident(id) => {
                out.push_str(&id.to_string());
                out.push(' ');
            }
            TokenTree::Punct(p) => {
                out.push(p.as_char());
                if p.spacing() == Spacing::Alone {
                    out.push(' ');
                }
            }
            TokenTree::Literal(l) => {
                out.push_str(&l.to_string());
                out.push(' ');
            }
        }
    }
}

fn is_punct(t: Option<&TokenTree>, c: char) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

fn ident_of(t: Option<&TokenTree>) -> Option<String> {
    match t {
        Some(TokenTree::Ident(id)) => Some(id.to_string()),
        _ => None,
    }
}

/// `::` at `i`.
fn path_sep(toks: &[TokenTree], i: usize) -> bool {
    matches!(toks.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(toks.get(i + 1), ':')
}

/// Collects paths, embedded files, definitions and impls, at every depth.
fn walk(toks: &[TokenTree], refs: &mut Refs) {
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Group(g) => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                walk(&inner, refs);
                i += 1;
            }
            TokenTree::Ident(id) => {
                let word = id.to_string();
                let continues = i >= 2 && path_sep(toks, i - 2);
                if continues {
                    i += 1;
                    continue;
                }
                item_facts(toks, i, &word, refs);
                let is_use = i > 0 && ident_of(toks.get(i - 1)).as_deref() == Some("use");
                i = read_path_or_tree(toks, i, &[], is_use, refs);
            }
            _ => i += 1,
        }
    }
}

/// Definitions, impl headers and embedded files starting at the identifier at `i`.
fn item_facts(toks: &[TokenTree], i: usize, word: &str, refs: &mut Refs) {
    match word {
        "struct" | "enum" | "union" | "trait" | "type" => {
            if let Some(name) = ident_of(toks.get(i + 1)) {
                refs.defines.insert(name);
            }
        }
        "impl" if item_position(toks, i) => {
            if let Some(site) = impl_header(toks, i + 1) {
                refs.impls.push(site);
            }
        }
        "include_str" | "include_bytes" if is_punct(toks.get(i + 1), '!') => {
            if let Some(TokenTree::Group(g)) = toks.get(i + 2)
                && let Some(TokenTree::Literal(l)) = g.stream().into_iter().next()
            {
                let s = l.to_string();
                if let Some(path) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    refs.includes.push(path.to_string());
                }
            }
        }
        _ => {}
    }
}

/// Whether `impl` at `i` starts an item (not `-> impl Trait` or `x: impl Fn()`).
fn item_position(toks: &[TokenTree], i: usize) -> bool {
    match i.checked_sub(1).and_then(|p| toks.get(p)) {
        None => true,
        Some(TokenTree::Group(g)) => matches!(g.delimiter(), Delimiter::Brace | Delimiter::Bracket),
        Some(TokenTree::Punct(p)) => p.as_char() == ';',
        Some(TokenTree::Ident(id)) => id == "unsafe" || id == "default",
        Some(TokenTree::Literal(_)) => false,
    }
}

/// `(trait, type)` of an impl header starting after `impl`.
fn impl_header(toks: &[TokenTree], mut i: usize) -> Option<(Option<String>, String)> {
    if is_punct(toks.get(i), '<') {
        i = skip_angles(toks, i);
    }
    let (first, next) = type_name(toks, i)?;
    if ident_of(toks.get(next)).as_deref() == Some("for") {
        let (ty, _) = type_name(toks, next + 1)?;
        Some((Some(first), ty))
    } else {
        Some((None, first))
    }
}

/// The last segment of the type path at `i` (after `&`, `mut`, `dyn`, lifetimes), and where it ends.
fn type_name(toks: &[TokenTree], mut i: usize) -> Option<(String, usize)> {
    loop {
        match toks.get(i) {
            Some(TokenTree::Punct(p)) if p.as_char() == '&' || p.as_char() == '!' => i += 1,
            Some(TokenTree::Punct(p)) if p.as_char() == '\'' => i += 2,
            Some(TokenTree::Ident(id)) if id == "mut" || id == "dyn" => i += 1,
            _ => break,
        }
    }
    let mut last = ident_of(toks.get(i))?;
    i += 1;
    loop {
        if is_punct(toks.get(i), '<') {
            i = skip_angles(toks, i);
        } else if path_sep(toks, i) {
            match ident_of(toks.get(i + 2)) {
                Some(s) => {
                    last = s;
                    i += 3;
                }
                None => i += 2,
            }
        } else {
            return Some((last, i));
        }
    }
}

/// Skips a balanced `<...>` starting at `i` (`->` inside does not close it).
fn skip_angles(toks: &[TokenTree], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Punct(p) if p.as_char() == '-' && is_punct(toks.get(i + 1), '>') => i += 1,
            TokenTree::Punct(p) if p.as_char() == '<' => depth += 1,
            TokenTree::Punct(p) if p.as_char() == '>' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads `a::b::c` (and a use tree `a::{b, c::d}`) from `i`, records the
/// paths under `prefix`, and returns the index after it. A lone identifier
/// counts as a path only in a use tree.
fn read_path_or_tree(
    toks: &[TokenTree],
    mut i: usize,
    prefix: &[String],
    in_use: bool,
    refs: &mut Refs,
) -> usize {
    let mut segs: Vec<String> = prefix.to_vec();
    let Some(first) = ident_of(toks.get(i)) else {
        return i + 1;
    };
    segs.push(first);
    i += 1;
    loop {
        if !path_sep(toks, i) {
            break;
        }
        match toks.get(i + 2) {
            Some(TokenTree::Ident(id)) => {
                segs.push(id.to_string());
                i += 3;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                use_tree(&inner, &segs, refs);
                return i + 3;
            }
            _ => break,
        }
    }
    if segs.len() > 1 || in_use {
        // `self` in a use tree names the prefix itself.
        if segs.last().is_some_and(|s| s == "self") && segs.len() > 1 {
            segs.pop();
        }
        refs.paths.push(segs);
    }
    i
}

/// The items of a use tree's braces, each under `prefix`.
fn use_tree(toks: &[TokenTree], prefix: &[String], refs: &mut Refs) {
    let mut i = 0;
    let mut any = false;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Ident(id) if id != "as" => {
                i = read_path_or_tree(toks, i, prefix, true, refs);
                any = true;
                // Skip `as alias`.
                if ident_of(toks.get(i)).as_deref() == Some("as") {
                    i += 2;
                }
            }
            TokenTree::Punct(p) if p.as_char() == '*' => {
                refs.paths.push(prefix.to_vec());
                any = true;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if !any {
        refs.paths.push(prefix.to_vec());
    }
}

impl Lock {
    /// Parses the `[[package]]` tables of a `Cargo.lock`.
    pub fn parse(text: &str) -> Lock {
        let mut packages = Vec::new();
        let mut cur: Option<Package> = None;
        let mut in_deps = false;
        for line in text.lines() {
            let line = line.trim();
            if line == "[[package]]" {
                packages.extend(cur.take());
                cur = Some(Package::default());
                in_deps = false;
                continue;
            }
            let Some(p) = cur.as_mut() else { continue };
            if in_deps {
                if line.starts_with(']') {
                    in_deps = false;
                } else if let Some(d) = unquote(line.trim_end_matches(',')) {
                    p.dependencies.push(d);
                }
                continue;
            }
            let Some((key, value)) = line.split_once(" = ") else {
                continue;
            };
            match key {
                "name" => p.name = unquote(value).unwrap_or_default(),
                "version" => p.version = unquote(value).unwrap_or_default(),
                "checksum" => p.checksum = unquote(value).unwrap_or_default(),
                "source" if p.checksum.is_empty() => {
                    p.checksum = unquote(value).unwrap_or_default()
                }
                "dependencies" => {
                    let inline = value.trim();
                    if inline.starts_with('[') && inline.ends_with(']') {
                        for d in inline[1..inline.len() - 1].split(',') {
                            p.dependencies.extend(unquote(d.trim()));
                        }
                    } else {
                        in_deps = true;
                    }
                }
                _ => {}
            }
        }
        packages.extend(cur);
        Lock { packages }
    }

    /// The package a dependency entry (`name`, `name version`, `name version (source)`) names.
    fn find(&self, entry: &str) -> Option<&Package> {
        let mut words = entry.split_whitespace();
        let name = words.next()?;
        let version = words.next();
        self.packages
            .iter()
            .find(|p| p.name == name && version.is_none_or(|v| v == p.version))
    }

    /// The root package's direct dependencies by the name code uses (`-` as `_`).
    pub fn direct(&self, root: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(r) = self.packages.iter().find(|p| p.name == root) {
            for d in &r.dependencies {
                if let Some(p) = self.find(d) {
                    out.insert(p.name.replace('-', "_"), d.clone());
                }
            }
        }
        out
    }

    /// `entries` and everything they depend on, as `name version checksum`.
    pub fn closure(&self, entries: &[String]) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<&Package> = entries.iter().filter_map(|e| self.find(e)).collect();
        while let Some(p) = stack.pop() {
            if seen.insert(format!("{} {} {}", p.name, p.version, p.checksum)) {
                stack.extend(p.dependencies.iter().filter_map(|d| self.find(d)));
            }
        }
        seen
    }
}

fn unquote(s: &str) -> Option<String> {
    s.trim()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(str::to_string)
}

/// The identity of `module`: its closure's files and locked crates, folded into one digest.
pub fn identity(
    tree: &SourceTree,
    lock: &Lock,
    root_package: &str,
    module: &str,
) -> Option<Identity> {
    tree.modules.get(module)?;
    let direct = lock.direct(root_package);
    let mut files = BTreeSet::new();
    let mut crate_entries = BTreeSet::new();
    for m in tree.closure(module) {
        let info = &tree.modules[&m];
        files.insert(format!("{} {}", info.file, info.digest));
        for (embed, digest) in &info.embeds {
            files.insert(format!("{embed} {digest}"));
        }
        for c in &info.crates {
            crate_entries.extend(direct.get(c).cloned());
        }
    }
    let crates = lock.closure(&crate_entries.into_iter().collect::<Vec<_>>());
    let mut h = blake3::Hasher::new();
    h.update(b"efrlhf-source-identity-v1\n");
    for f in &files {
        h.update(format!("file {f}\n").as_bytes());
    }
    for c in &crates {
        h.update(format!("crate {c}\n").as_bytes());
    }
    Some(Identity {
        module: module.to_string(),
        digest: h.finalize().to_hex().to_string(),
        files: files.into_iter().collect(),
        crates: crates
            .into_iter()
            .map(|c| {
                c.rsplit_once(' ')
                    .map(|(nv, _)| nv.to_string())
                    .unwrap_or(c)
            })
            .collect(),
    })
}
