//! Tables of metrics and runs, rendered as aligned text, Markdown, CSV or JSON.

use std::fmt::Write;

pub mod curves;
pub mod html;
pub mod plot;
pub mod tracking;

/// Formats a metric for people: integers plainly, others with 4 decimals or in
/// scientific notation when very small or large.
pub fn fmt_number(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{}", x as i64);
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// Formats a duration for people: `0.3s`, `42s`, `3m05s`, `2h07m`.
pub fn fmt_duration(secs: f64) -> String {
    if secs < 9.95 {
        return format!("{:.1}s", secs.max(0.0));
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A cell: text, or a number (kept exact for CSV/JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    Empty,
}

impl Cell {
    fn display(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Number(x) => fmt_number(*x),
            Cell::Empty => "-".into(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// Aligned columns; numbers right-aligned.
    pub fn to_text(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::display).collect())
            .collect();
        let widths = self.column_widths();
        let mut out = String::new();
        let header: Vec<String> = self
            .columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", header.join("  ").trim_end());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", rule.join("  "));
        for (r, row) in cells.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (s, w))| {
                    if matches!(self.rows[r][c], Cell::Number(_)) {
                        format!("{s:>w$}")
                    } else {
                        format!("{s:<w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out
    }

    /// The width of [`Table::to_text`]'s widest line, in characters.
    pub fn text_width(&self) -> usize {
        let widths = self.column_widths();
        widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)
    }

    fn column_widths(&self) -> Vec<usize> {
        (0..self.columns.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.display().chars().count()))
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The table cut into tables no wider than `width` (where a column fits at
    /// all): each keeps the first `keep` columns and takes as many of the
    /// others, in order, as fit. Every column is in exactly one piece.
    pub fn split_columns(&self, keep: usize, width: usize) -> Vec<Table> {
        let widths = self.column_widths();
        let keep = keep.min(widths.len());
        let base: usize = widths[..keep].iter().map(|w| w + 2).sum();
        let mut pieces: Vec<Vec<usize>> = Vec::new();
        let mut used = base;
        for (c, w) in widths.iter().enumerate().skip(keep) {
            match pieces.last_mut() {
                Some(piece) if used + w <= width => piece.push(c),
                _ => {
                    pieces.push(vec![c]);
                    used = base;
                }
            }
            used += w + 2;
        }
        if pieces.is_empty() {
            return vec![self.clone()];
        }
        pieces
            .into_iter()
            .map(|piece| {
                let cols: Vec<usize> = (0..keep).chain(piece).collect();
                Table {
                    columns: cols.iter().map(|&c| self.columns[c].clone()).collect(),
                    rows: self
                        .rows
                        .iter()
                        .map(|r| {
                            cols.iter()
                                .map(|&c| r.get(c).cloned().unwrap_or(Cell::Empty))
                                .collect()
                        })
                        .collect(),
                }
            })
            .collect()
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let esc = |s: &str| s.replace('|', "\\|");
        let _ = writeln!(
            out,
            "| {} |",
            self.columns
                .iter()
                .map(|c| esc(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(
            out,
            "|{}|",
            self.rows
                .first()
                .map(|r| r
                    .iter()
                    .map(|c| if matches!(c, Cell::Number(_)) {
                        "---:"
                    } else {
                        "---"
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
                .unwrap_or_else(|| vec!["---"; self.columns.len()].join("|"))
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} |",
                row.iter()
                    .map(|c| esc(&c.display()))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        out
    }

    /// RFC 4180 CSV with full-precision numbers; empty cells are empty.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}",
            self.columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(",")
        );
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|c| match c {
                    Cell::Text(s) => quote(s),
                    Cell::Number(x) => format!("{x}"),
                    Cell::Empty => String::new(),
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_number(3.0), "3");
        assert_eq!(fmt_number(0.746428), "0.7464");
        assert_eq!(fmt_number(1.5e-5), "1.500e-5");
        assert_eq!(fmt_duration(0.26), "0.3s");
        assert_eq!(fmt_duration(41.6), "42s");
        assert_eq!(fmt_duration(185.0), "3m05s");
        assert_eq!(fmt_duration(7620.0), "2h07m");
    }

    #[test]
    fn renders_all_formats() {
        let t = Table {
            columns: vec!["stage".into(), "acc".into()],
            rows: vec![
                vec![Cell::Text("b[x=1]".into()), Cell::Number(0.5)],
                vec![Cell::Text("a, b".into()), Cell::Empty],
            ],
        };
        assert_eq!(t.to_csv(), "stage,acc\nb[x=1],0.5\n\"a, b\",\n");
        assert!(t.to_markdown().contains("| b[x=1] | 0.5000 |"));
        assert!(t.to_text().lines().nth(2).unwrap().ends_with("0.5000"));
    }

    #[test]
    fn splits_columns_to_a_width_keeping_the_key_columns() {
        let t = Table {
            columns: ["id", "aaaa", "bbbb", "cccc"].map(String::from).to_vec(),
            rows: vec![vec![
                Cell::Text("x".into()),
                Cell::Number(1.0),
                Cell::Number(2.0),
                Cell::Number(3.0),
            ]],
        };
        assert_eq!(t.text_width(), 2 + 3 * (2 + 4));
        assert_eq!(
            t.to_text().lines().map(str::len).max(),
            Some(t.text_width())
        );
        // "id  aaaa  bbbb" is 14 wide.
        let pieces = t.split_columns(1, 14);
        let cols: Vec<Vec<&str>> = pieces
            .iter()
            .map(|p| p.columns.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(cols, [vec!["id", "aaaa", "bbbb"], vec!["id", "cccc"]]);
        assert_eq!(pieces[1].rows[0][1], Cell::Number(3.0));
        assert!(pieces.iter().all(|p| p.text_width() <= 14));
        // Too narrow for two columns: one per piece, never none.
        assert_eq!(t.split_columns(1, 3).len(), 3);
        assert_eq!(t.split_columns(1, 100).len(), 1);
    }
}
