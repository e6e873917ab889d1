//! The laid-out graph as one self-contained SVG: module boxes with their address (a collapsed
//! one with its counts per action), resources coloured by action with their address and a
//! tooltip, and an arrow from each resource to what it refers to. All text is XML-escaped:
//! addresses and instance keys are the user's strings.

use crate::dot::colour;
use crate::graph::Graph;
use crate::layout::{node_label, short_label, Endpoint, Layout, Rect};
use std::fmt::Write as _;

/// `s` escaped for XML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The SVG document.
pub fn render(g: &Graph, l: &Layout) -> String {
    let mut out = String::with_capacity(256 + l.nodes.len() * 420);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="Helvetica, Arial, sans-serif" font-size="11">
<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8890a0"/></marker></defs>
<rect x="0" y="0" width="{w:.0}" height="{h:.0}" fill="#ffffff"/>
"##,
        w = l.width,
        h = l.height
    );
    for m in l.modules.iter().filter(|m| !m.hidden) {
        let r = m.rect;
        let _ = writeln!(
            out,
            r##"<g class="module{}" data-module="{}"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6" fill="{}" stroke="#b8bfcc"/><text x="{:.1}" y="{:.1}" font-weight="bold" fill="#3b4252">{}</text>"##,
            if m.collapsed { " collapsed" } else { "" },
            escape(&m.address),
            escape(&m.address),
            r.x,
            r.y,
            r.w,
            r.h,
            if m.collapsed { "#eef1f6" } else { "none" },
            r.x + 8.0,
            r.y + 15.0,
            escape(&format!(
                "{}{}",
                if m.collapsed { "▸ " } else { "" },
                node_label(&m.address)
            ))
        );
        if m.collapsed {
            let line: Vec<String> = m.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" fill="#556">{}</text>"##,
                r.x + 8.0,
                r.y + 34.0,
                escape(&line.join(", "))
            );
        }
        out.push_str("</g>\n");
    }
    let rect_of = |e: &Endpoint| -> Option<Rect> {
        match e {
            Endpoint::Node(i) => l.nodes.get(i).copied(),
            Endpoint::Module(ix) => l.modules.get(*ix).map(|m| m.rect),
        }
    };
    out.push_str("<g class=\"edges\" fill=\"none\" stroke=\"#8890a0\" stroke-width=\"1\">\n");
    for (a, b) in &l.edges {
        let (Some(ra), Some(rb)) = (rect_of(a), rect_of(b)) else {
            continue;
        };
        // From the dependent's left side to the dependency's right side (dependencies are
        // drawn to the left).
        let (x1, y1) = (ra.x, ra.y + ra.h / 2.0);
        let (x2, y2) = (rb.x + rb.w, rb.y + rb.h / 2.0);
        let dx = ((x1 - x2).abs() / 2.0).max(20.0);
        let _ = writeln!(
            out,
            r#"<path d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" marker-end="url(#arrow)"/>"#,
            x1 - dx,
            x2 + dx
        );
    }
    out.push_str("</g>\n");
    for (&i, r) in &l.nodes {
        let c = &g.nodes[i];
        let mut tip = format!("{} — {}", c.address, c.action.key());
        if let Some(k) = &c.deposed {
            let _ = write!(tip, " (deposed {k})");
        }
        let _ = writeln!(
            out,
            r##"<g class="node" data-action="{}" data-type="{}" data-module="{}"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="4" fill="{}" stroke="#7a8294"/><text x="{:.1}" y="{:.1}" fill="#1d2330">{}</text></g>"##,
            escape(c.action.key()),
            escape(&c.ty),
            escape(c.module.as_deref().unwrap_or("")),
            escape(&tip),
            r.x,
            r.y,
            r.w,
            r.h,
            colour(&c.action),
            r.x + 8.0,
            r.y + r.h / 2.0 + 4.0,
            escape(&short_label(c))
        );
    }
    out.push_str("</svg>\n");
    out
}
