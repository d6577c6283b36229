//! Tables of metrics and runs, rendered as aligned text, Markdown, CSV or JSON.

use std::fmt::Write;

pub mod plot;

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
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
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
}
