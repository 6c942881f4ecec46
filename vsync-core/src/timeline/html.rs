//! HTML: a self-contained page around the SVG.
//!
//! One file that a browser opens with no other file beside it: the SVG is
//! inlined (hovering a mark shows what it is), followed by the checker's
//! violations as plain text, which can be searched and copied. All text
//! taken from the run is escaped.

use super::{Timeline, TimelineOptions};
use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub(crate) fn page(t: &Timeline, opts: &TimelineOptions) -> String {
    let title = escape(opts.title.as_deref().unwrap_or("vsync run timeline"));
    let mut out = String::with_capacity(t.svg.len() + 2048);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>\nbody {{ font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 1em; color: #222; }}\n\
         .figure {{ overflow-x: auto; }}\n.violations li {{ color: #d62728; font-family: monospace; }}\n\
         .ok {{ color: #2ca02c; }}\n</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <p>{} incarnations, {} views, {} deliveries{}. Hover over a mark for details.</p>\n\
         <div class=\"figure\">\n",
        t.lanes,
        t.views,
        t.deliveries,
        if t.binned {
            " (summarised per time slice)"
        } else {
            ""
        }
    );
    out.push_str(&t.svg);
    out.push_str("\n</div>\n");
    if t.violations.is_empty() {
        if opts.check.is_some() {
            out.push_str("<p class=\"ok\">The checker found no violation.</p>\n");
        }
    } else {
        let _ = writeln!(
            out,
            "<h2>The checker found {} violation(s)</h2>\n<ul class=\"violations\">",
            t.violations.len()
        );
        for v in &t.violations {
            let _ = writeln!(out, "<li>{}</li>", escape(&v.to_string()));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            super::escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
