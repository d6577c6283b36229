//! Limits checked before a KDL text reaches the parser: its size, and how
//! deep its children and its block comments nest (the parser recurses, and
//! a stack overflow aborts the process instead of reporting anything). Each
//! limit is far beyond what an experiment or a manifest needs, and each
//! error points at the place. (Reading a file checks that it is a regular
//! file and UTF-8: `SourceFile::read`.)

use miette::SourceSpan;

use crate::error::{Diag, SourceFile};

/// The largest experiment or manifest text.
const MAX_BYTES: usize = SourceFile::MAX_BYTES as usize;
/// The deepest nesting of `{ }` children.
pub(crate) const MAX_DEPTH: usize = 64;
/// The deepest nesting of `/* */` comments.
pub(crate) const MAX_COMMENT_DEPTH: usize = 64;

/// Size and nesting limits of a KDL text.
pub(crate) fn check(src: &SourceFile) -> Result<(), Diag> {
    let text = src.text.as_str();
    if text.len() > MAX_BYTES {
        return Err(Diag::input(
            "E-LIMIT",
            format!(
                "`{}` is {} bytes, more than the {MAX_BYTES} an experiment or manifest may have",
                src.path.display(),
                text.len()
            ),
        )
        .at(src, SourceSpan::from(MAX_BYTES..MAX_BYTES), "the limit")
        .with_help("split it, or move data into files that `path` parameters name"));
    }
    naive_comment_depth(src)?;
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        i = match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => skip_block_comment(src, i)?,
            b'"' => skip_string(b, i, 0),
            b'#' | b'r' if raw_hashes(b, i).is_some() => {
                let (hashes, quote) = raw_hashes(b, i).unwrap_or((0, i));
                skip_string(b, quote, hashes)
            }
            b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(src, i, "children", MAX_DEPTH));
                }
                i + 1
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i + 1
            }
            _ => i + 1,
        };
    }
    Ok(())
}

/// Comment nesting counted as if there were no strings: the parser may read
/// a broken file's strings otherwise than the scan above does, and `/*`
/// inside strings is rare enough that a limit on both costs nothing.
fn naive_comment_depth(src: &SourceFile) -> Result<(), Diag> {
    let b = src.text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                if depth > MAX_COMMENT_DEPTH {
                    return Err(too_deep(src, i, "comments", MAX_COMMENT_DEPTH));
                }
                i += 2;
            }
            (b'*', b'/') => {
                depth = depth.saturating_sub(1);
                i += 2;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn too_deep(src: &SourceFile, at: usize, what: &str, max: usize) -> Diag {
    Diag::input(
        "E-LIMIT",
        format!("{what} nest more than {max} deep"),
    )
    .at(src, SourceSpan::from(at..at + 1), "too deep")
    .with_help("an experiment needs two levels (`stage { ... }`); check for unclosed or generated nesting")
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// Past a (nested) block comment starting at `i`; unclosed ones run to the end (the parser reports them).
fn skip_block_comment(src: &SourceFile, mut i: usize) -> Result<usize, Diag> {
    let b = src.text.as_bytes();
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            if depth > MAX_COMMENT_DEPTH {
                return Err(too_deep(src, i, "comments", MAX_COMMENT_DEPTH));
            }
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Ok(i)
}

/// `#"`, `##"`, `r#"` (KDL v1): the number of hashes and where the quote is.
fn raw_hashes(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let start = if b[i] == b'r' {
        // Only at the start of a value, not inside an identifier.
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-' || b[i - 1] == b'_') {
            return None;
        }
        i + 1
    } else {
        i
    };
    let mut j = start;
    while j < b.len() && b[j] == b'#' {
        j += 1;
    }
    (j > start && b.get(j) == Some(&b'"')).then_some((j - start, j))
}

/// Past a string whose opening quote is at `q`: escapes in plain ones, `"#..#` closes raw ones.
fn skip_string(b: &[u8], q: usize, hashes: usize) -> usize {
    let mut i = q + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if hashes == 0 => i += 2,
            b'"' => {
                let closes = (1..=hashes).all(|k| b.get(i + k) == Some(&b'#'));
                if closes {
                    return i + 1 + hashes;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> SourceFile {
        SourceFile::new(std::path::Path::new("t.kdl"), text.to_string())
    }

    #[test]
    fn braces_in_strings_and_comments_do_not_count() {
        let deep = "{".repeat(70);
        let ok = format!(
            "a \"{deep}\" #\"{deep}\"# // {deep}\n/* {deep} /* {deep} */ */ b {{ c {{ d 1; }} }}\n"
        );
        assert!(check(&src(&ok)).is_ok());
    }

    #[test]
    fn deep_children_and_deep_comments_are_errors_with_a_place() {
        let text = format!("a {}", "{ b ".repeat(MAX_DEPTH + 1));
        let e = check(&src(&text)).unwrap_err();
        assert!(
            e.to_string().contains("children nest more than 64 deep"),
            "{e}"
        );
        let text = format!("x 1\n{}", "/* ".repeat(MAX_COMMENT_DEPTH + 1));
        let e = check(&src(&text)).unwrap_err();
        assert!(
            e.to_string().contains("comments nest more than 64 deep"),
            "{e}"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_with_line_and_column() {
        let e = crate::error::utf8_text(std::path::Path::new("t.kdl"), b"ok 1\nab\xffc\n".to_vec())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("t.kdl:2:3: the text is not UTF-8 (byte 0xff)"),
            "{e}"
        );
    }
}
