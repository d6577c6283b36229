//! One diagnostic type for everything a user can get wrong, and for what the
//! environment gets wrong. Each error carries a category (whose fault it is),
//! a stable code, the spans it points at and a `help:` line with the fix.
//!
//! Rendering is miette's: `file:line:column`, the source line, the label.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

/// Whose fault an error is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The experiment, a manifest or a command-line argument is wrong.
    Input,
    /// The machine is wrong: a missing program, an unreadable cache, a full disk.
    Environment,
    /// A stage ran and failed.
    StageFailed,
    /// A check found problems (`cache verify`).
    Damaged,
    /// A bug in efrlhf itself.
    Internal,
}

impl Category {
    /// The process exit code for this category (documented in README.md).
    pub fn exit_code(self) -> i32 {
        match self {
            Category::StageFailed | Category::Damaged => 1,
            Category::Input => 2,
            Category::Environment => 3,
            Category::Internal => 70,
        }
    }
}

/// A text file that diagnostics point into (an experiment or a manifest).
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as the user would write it (relative to the working directory when possible).
    pub path: PathBuf,
    /// The file's text.
    pub text: Arc<String>,
    named: Arc<NamedSource<Arc<String>>>,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> SourceFile {
        let text = Arc::new(text);
        let shown = display_path(path);
        let named = Arc::new(
            NamedSource::new(shown.display().to_string(), text.clone()).with_language("kdl"),
        );
        SourceFile {
            path: shown,
            text,
            named,
        }
    }

    /// Reads a file; a missing or unreadable file is an input error naming it.
    /// Only regular files are read (a FIFO or `/dev/zero` would never end),
    /// at most [`SourceFile::MAX_BYTES`], and their text must be UTF-8.
    pub fn read(path: &Path) -> Result<SourceFile, Diag> {
        let fail = |why: String| {
            Diag::input("E-FILE", format!("cannot read `{}`: {why}", path.display()))
                .with_help("check the path; experiment paths are relative to the current directory")
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("it is not a regular file".into()));
        }
        if meta.len() > Self::MAX_BYTES {
            return Err(fail(format!(
                "it has {} bytes; experiments and manifests have at most {}",
                meta.len(),
                Self::MAX_BYTES
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let text = utf8_text(path, bytes)?;
        Ok(SourceFile::new(path, text))
    }

    /// The largest experiment or manifest file read.
    pub const MAX_BYTES: u64 = 1 << 20;

    /// 1-based line and column of a byte offset, for messages without a rendered snippet.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        end_line_col(&self.text[..offset.min(self.text.len())])
    }
}

/// Shows paths relative to the working directory when they are below it.
pub fn display_path(path: &Path) -> PathBuf {
    if path.is_absolute()
        && let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = path.strip_prefix(&cwd)
    {
        return rel.to_path_buf();
    }
    path.to_path_buf()
}

/// A single diagnostic (boxed: errors travel through many `Result`s).
#[derive(Debug, Clone)]
pub struct Diag(Box<DiagData>);

/// The content of a [`Diag`].
#[derive(Debug, Clone)]
pub struct DiagData {
    pub category: Category,
    pub code: &'static str,
    pub message: String,
    pub source: Option<SourceFile>,
    pub labels: Vec<LabeledSpan>,
    pub help: Option<String>,
    pub related: Vec<Diag>,
}

impl Diag {
    pub fn new(category: Category, code: &'static str, message: impl Into<String>) -> Diag {
        Diag(Box::new(DiagData {
            category,
            code,
            message: message.into(),
            source: None,
            labels: Vec::new(),
            help: None,
            related: Vec::new(),
        }))
    }
    pub fn input(code: &'static str, message: impl Into<String>) -> Diag {
        Diag::new(Category::Input, code, message)
    }
    pub fn env(code: &'static str, message: impl Into<String>) -> Diag {
        Diag::new(Category::Environment, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Diag {
        Diag::new(Category::Internal, "E-INTERNAL", message)
            .with_help("this is a bug in efrlhf; please report it with the command that caused it")
    }
    /// Points the diagnostic at a span of a file.
    pub fn at(mut self, source: &SourceFile, span: SourceSpan, label: impl Into<String>) -> Diag {
        self.source = Some(source.clone());
        self.labels
            .push(LabeledSpan::new_primary_with_span(Some(label.into()), span));
        self
    }
    /// Adds a secondary label in the same file.
    pub fn also(mut self, span: SourceSpan, label: impl Into<String>) -> Diag {
        self.labels
            .push(LabeledSpan::new_with_span(Some(label.into()), span));
        self
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }
    pub fn with_related(mut self, related: Diag) -> Diag {
        self.related.push(related);
        self
    }
    /// `file:line:column` of the primary label, when there is one.
    pub fn location(&self) -> Option<String> {
        let src = self.source.as_ref()?;
        let label = self.labels.first()?;
        let (line, col) = src.line_col(label.offset());
        Some(format!("{}:{line}:{col}", src.path.display()))
    }
}

/// Lines longer than this are not shown as a snippet (the renderer cannot
/// place a label past column 65,535, and such lines help no one).
const SNIPPET_LINE_MAX: usize = 1_000;

impl Diag {
    /// Whether every line this diagnostic points at is short enough to show.
    pub fn fits_a_snippet(&self) -> bool {
        let Some(src) = &self.source else {
            return true;
        };
        let text = src.text.as_str();
        let line_len = |offset: usize| {
            let offset = offset.min(text.len());
            let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let end = text[offset..]
                .find('\n')
                .map(|i| offset + i)
                .unwrap_or(text.len());
            end - start
        };
        self.labels.iter().all(|l| {
            line_len(l.offset()) <= SNIPPET_LINE_MAX
                && line_len(l.offset() + l.len()) <= SNIPPET_LINE_MAX
        }) && self.related.iter().all(Diag::fits_a_snippet)
    }

    /// The diagnostic as plain lines: `error[code]: message`, `--> file:line:col` per label, `help:`.
    pub fn plain(&self) -> String {
        let mut out = format!("error[{}]: {}\n", self.code, self.message);
        if let Some(src) = &self.source {
            for l in &self.labels {
                let (line, col) = src.line_col(l.offset());
                let what = l.label().unwrap_or_default();
                out.push_str(&format!(
                    "  --> {}:{line}:{col}: {what}\n",
                    src.path.display()
                ));
            }
        }
        if let Some(h) = &self.help {
            out.push_str(&format!("  help: {h}\n"));
        }
        for r in &self.related {
            out.push_str(&r.plain());
        }
        out
    }
}

impl std::ops::Deref for Diag {
    type Target = DiagData;
    fn deref(&self) -> &DiagData {
        &self.0
    }
}

impl std::ops::DerefMut for Diag {
    fn deref_mut(&mut self) -> &mut DiagData {
        &mut self.0
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| &*s.named as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|d| d as &dyn Diagnostic)))
        }
    }
}

/// Several diagnostics found in one pass (validation reports every problem it finds).
#[derive(Debug, Clone, Default)]
pub struct Diags(pub Vec<Diag>);

impl Diags {
    pub fn push(&mut self, d: Diag) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok(value)` when nothing was reported.
    pub fn into_result<T>(self, value: T) -> Result<T, Diags> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
    pub fn category(&self) -> Category {
        self.0
            .first()
            .map(|d| d.category)
            .unwrap_or(Category::Internal)
    }
}

impl From<Diag> for Diags {
    fn from(d: Diag) -> Diags {
        Diags(vec![d])
    }
}

/// An I/O error on a path the tool manages (cache, outputs).
pub fn io_error(what: &str, path: &Path, err: std::io::Error) -> Diag {
    Diag::env("E-IO", format!("{what} `{}`: {err}", path.display()))
}

/// Suggests the closest of `candidates` to `word`, for "did you mean" help.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.7 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// 1-based line and column of the position just after `before`.
fn end_line_col(before: &str) -> (usize, usize) {
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The text of `bytes` read from `path`, or an error at the first byte that
/// is not UTF-8, with its line and column.
pub fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, Diag> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        let (line, col) = end_line_col(&String::from_utf8_lossy(&bytes[..valid]));
        Diag::input(
            "E-UTF8",
            format!(
                "{}:{line}:{col}: the text is not UTF-8 (byte 0x{:02x})",
                display_path(path).display(),
                bytes[valid]
            ),
        )
        .with_help("save the file as UTF-8")
    })
}
