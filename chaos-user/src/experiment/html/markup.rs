//! Building HTML and SVG elements with every attribute value and text escaped.

use std::fmt::Display;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped: safe as element text and as a quoted
/// attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// A coordinate or length, with one decimal (enough for a 1200-unit-wide drawing).
pub fn px(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// An element being built: `el("rect").attr("class", "x").num("width", 3.0).close()`.
pub struct El {
    head: String,
    body: String,
    name: &'static str,
}

/// Starts an element.
pub fn el(name: &'static str) -> El {
    El {
        head: format!("<{name}"),
        body: String::new(),
        name,
    }
}

impl El {
    /// An attribute; the value is escaped.
    pub fn attr(mut self, key: &str, value: impl Display) -> El {
        self.head
            .push_str(&format!(" {key}=\"{}\"", esc(&value.to_string())));
        self
    }

    /// A numeric attribute (a coordinate or length).
    pub fn num(self, key: &str, value: f64) -> El {
        self.attr(key, px(value))
    }

    /// Text content, escaped.
    pub fn text(mut self, text: &str) -> El {
        self.body.push_str(&esc(text));
        self
    }

    /// Markup made by this module's builders (not escaped again).
    pub fn child(mut self, markup: impl AsRef<str>) -> El {
        self.body.push_str(markup.as_ref());
        self
    }

    /// Children made by this module's builders.
    pub fn children<S: AsRef<str>>(mut self, markup: impl IntoIterator<Item = S>) -> El {
        for m in markup {
            self.body.push_str(m.as_ref());
        }
        self
    }

    /// An SVG `<title>` child: the tooltip shown on hover, without any script.
    pub fn tooltip(self, text: &str) -> El {
        let title = el("title").text(text).close();
        self.child(title)
    }

    /// The element's markup.
    pub fn close(self) -> String {
        if self.body.is_empty() && is_void(self.name) {
            format!("{}/>", self.head)
        } else {
            format!("{}>{}</{}>", self.head, self.body, self.name)
        }
    }
}

/// Elements written `<x/>` when empty: SVG shapes and HTML void elements.
fn is_void(name: &str) -> bool {
    matches!(
        name,
        "rect" | "line" | "path" | "circle" | "polyline" | "br" | "meta" | "hr"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let m = el("td")
            .attr("title", "a\"b<c>")
            .text("<script>alert('x')</script> & co")
            .close();
        assert_eq!(
            m,
            "<td title=\"a&quot;b&lt;c&gt;\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</td>"
        );
    }

    #[test]
    fn shapes_close_themselves_and_numbers_are_short() {
        assert_eq!(
            el("rect").num("x", 3.0).num("y", 2.26).close(),
            "<rect x=\"3\" y=\"2.3\"/>"
        );
        assert_eq!(el("div").close(), "<div></div>");
    }
}
