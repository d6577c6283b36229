//! A self-contained HTML page: sections of headings, tables and inline SVG
//! charts, styles inline, no script and nothing fetched from elsewhere, so the
//! file opens offline and can be mailed or archived as it is.

use std::fmt::Write;

use super::{Cell, Table};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;color:#222}\
h1{margin-top:24px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}\
nav a{margin-right:14px}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}\
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}\
figure{display:inline-block;margin:8px 16px 8px 0}figcaption{font-size:12px;color:#555}\
.note{color:#666;font-size:13px}.status-done{color:#176317}.status-failed{color:#a11}\
.texts td{max-width:380px;font-size:12px}";

/// A page being written: a title, a navigation bar of its sections, a body.
pub struct Page {
    title: String,
    sections: Vec<(String, String)>,
    body: String,
}

impl Page {
    pub fn new(title: &str) -> Page {
        Page {
            title: title.to_string(),
            sections: Vec::new(),
            body: String::new(),
        }
    }

    /// Starts a section, listed in the navigation bar.
    pub fn section(&mut self, id: &str, title: &str) {
        self.sections.push((id.to_string(), title.to_string()));
        let _ = write!(
            self.body,
            "<h2 id=\"{}\">{}</h2>",
            escape(id),
            escape(title)
        );
    }

    pub fn subheading(&mut self, text: &str) {
        let _ = write!(self.body, "<h3>{}</h3>", escape(text));
    }

    pub fn paragraph(&mut self, text: &str) {
        let _ = write!(self.body, "<p>{}</p>", escape(text));
    }

    pub fn note(&mut self, text: &str) {
        let _ = write!(self.body, "<p class=\"note\">{}</p>", escape(text));
    }

    /// A table; numbers right-aligned, `status` cells coloured.
    pub fn table(&mut self, t: &Table) {
        self.body.push_str(&table_html(t, ""));
    }

    /// A table of long texts (reviews, summaries).
    pub fn text_table(&mut self, t: &Table) {
        self.body.push_str(&table_html(t, "texts"));
    }

    /// An inline SVG with a caption.
    pub fn figure(&mut self, svg: &str, caption: &str) {
        let svg = svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        let _ = write!(
            self.body,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            escape(caption)
        );
    }

    /// The whole document.
    pub fn finish(self) -> String {
        let nav: String = self
            .sections
            .iter()
            .map(|(id, t)| format!("<a href=\"#{}\">{}</a>", escape(id), escape(t)))
            .collect();
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\n<body><h1>{t}</h1><nav>{nav}</nav>\n{}\n</body></html>\n",
            self.body,
            t = escape(&self.title)
        )
    }
}

fn table_html(t: &Table, class: &str) -> String {
    let mut out = format!("<table class=\"{class}\"><thead><tr>");
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr></thead><tbody>");
    let status_col = t.columns.iter().position(|c| c == "status");
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let text = escape(&cell.display());
            match cell {
                Cell::Number(_) => {
                    let _ = write!(out, "<td class=\"num\">{text}</td>");
                }
                _ if Some(i) == status_col => {
                    let _ = write!(out, "<td class=\"status-{text}\">{text}</td>");
                }
                _ => {
                    let _ = write!(out, "<td>{text}</td>");
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Horizontal grouped bars: one group per category, one bar per series.
pub fn bar_chart_svg(title: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> String {
    const COLORS: [&str; 8] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let (label_w, plot_w, bar_h) = (230.0, 420.0, 12.0);
    let group_h = bar_h * series.len().max(1) as f64 + 10.0;
    let legend_h = 18.0 * series.len() as f64;
    let height = 40.0 + group_h * categories.len() as f64 + legend_h + 10.0;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|x| x.abs()))
        .filter(|x| x.is_finite())
        .fold(1e-12, f64::max);
    let zero = label_w + plot_w / 2.0;
    let scale = plot_w / 2.0 / max;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{}\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        (label_w + plot_w) / 2.0,
        escape(title),
        w = label_w + plot_w + 20.0
    );
    for (c, cat) in categories.iter().enumerate() {
        let y0 = 34.0 + group_h * c as f64;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y0 + group_h / 2.0,
            escape(cat)
        );
        for (s, (_, values)) in series.iter().enumerate() {
            let v = values.get(c).copied().unwrap_or(0.0);
            let v = if v.is_finite() { v } else { 0.0 };
            let (x, w) = if v >= 0.0 {
                (zero, v * scale)
            } else {
                (zero + v * scale, -v * scale)
            };
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>",
                y0 + bar_h * s as f64,
                bar_h - 2.0,
                COLORS[s % COLORS.len()],
                escape(&super::fmt_number(v))
            );
        }
    }
    let axis_bottom = 34.0 + group_h * categories.len() as f64;
    let _ = write!(
        svg,
        "<line x1=\"{zero}\" x2=\"{zero}\" y1=\"30\" y2=\"{axis_bottom}\" stroke=\"#444\"/>"
    );
    for (s, (name, _)) in series.iter().enumerate() {
        let y = axis_bottom + 14.0 + 18.0 * s as f64;
        let _ = write!(
            svg,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            y - 9.0,
            COLORS[s % COLORS.len()],
            label_w + 18.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A box per stage, in columns by depth (every stage right of its inputs),
/// with arrows from input to consumer.
pub fn dag_svg(stages: &[(String, String)], inputs: &[Vec<usize>]) -> String {
    let mut depth = vec![0usize; stages.len()];
    for i in 0..stages.len() {
        depth[i] = inputs[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
    }
    let mut row_in_col = vec![0usize; stages.len()];
    let mut per_col: Vec<usize> = Vec::new();
    for i in 0..stages.len() {
        if per_col.len() <= depth[i] {
            per_col.resize(depth[i] + 1, 0);
        }
        row_in_col[i] = per_col[depth[i]];
        per_col[depth[i]] += 1;
    }
    let (bw, bh, gx, gy) = (150.0, 44.0, 44.0, 18.0);
    let pos = |i: usize| {
        (
            10.0 + depth[i] as f64 * (bw + gx),
            10.0 + row_in_col[i] as f64 * (bh + gy),
        )
    };
    let width = 20.0 + per_col.len() as f64 * (bw + gx) - gx;
    let height = 20.0 + per_col.iter().copied().max().unwrap_or(1) as f64 * (bh + gy) - gy;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" style=\"max-width:100%;height:auto\" font-family=\"sans-serif\" font-size=\"12\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#666\"/></marker></defs>"
    );
    for (i, ins) in inputs.iter().enumerate() {
        for &j in ins {
            let ((x0, y0), (x1, y1)) = (pos(j), pos(i));
            let _ = write!(
                svg,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{x1}\" y2=\"{}\" stroke=\"#666\" marker-end=\"url(#arrow)\"/>",
                x0 + bw,
                y0 + bh / 2.0,
                y1 + bh / 2.0
            );
        }
    }
    for (i, (name, detail)) in stages.iter().enumerate() {
        let (x, y) = pos(i);
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bw}\" height=\"{bh}\" rx=\"6\" fill=\"#eef3fb\" stroke=\"#5b7db1\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            x + bw / 2.0,
            y + 18.0,
            escape(&clip(name, 21)),
            x + bw / 2.0,
            y + 34.0,
            escape(&clip(detail, 24))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// At most `n` characters, with an ellipsis when cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n.saturating_sub(1)).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_counts_what_it_holds() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        let mut p = Page::new("t <1>");
        p.section("s", "Stages");
        p.table(&Table {
            columns: vec!["stage".into(), "status".into(), "acc".into()],
            rows: vec![vec![
                Cell::Text("<b>".into()),
                Cell::Text("done".into()),
                Cell::Number(0.5),
            ]],
        });
        let html = p.finish();
        assert!(html.contains("<title>t &lt;1&gt;</title>"));
        assert!(html.contains(
            "<td>&lt;b&gt;</td><td class=\"status-done\">done</td><td class=\"num\">0.5000</td>"
        ));
        assert!(html.contains("<a href=\"#s\">Stages</a>"));
    }

    #[test]
    fn the_dag_puts_each_stage_right_of_its_inputs() {
        let stages: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .map(|s| (s.to_string(), "kind".to_string()))
            .collect();
        let svg = dag_svg(&stages, &[vec![], vec![0], vec![0, 1]]);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches("<line").count(), 3);
        // c is two columns right of a: x = 10 + 2 * (150 + 44).
        assert!(svg.contains("<rect x=\"398\" y=\"10\""), "{svg}");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
