//! `graph.html`: one self-contained page (no CDN, no network) that draws the graph with zoom
//! (wheel, buttons), pan (drag), filters by action, type and module, and modules that expand
//! and collapse in place on click. The page carries the graph as data, not as drawing: every
//! container's items in the columns [`Layout`] gave them, and the sizes the stacking rule
//! needs. Its script ([`SCRIPT`]) places them by that rule, so the page opens looking like
//! `graph.svg`, and a module opened in the middle pushes its neighbours aside rather than
//! opening beside the graph. Big plans open collapsed (see [`crate::layout::DETAIL_NODES`])
//! and a module's resources are only drawn when it is opened, in batches per frame: the page
//! loads progressively whatever the plan's size.
//!
//! Plan strings reach the page as JSON text inside an inert `application/json` script (with
//! `<`, `>` and `&` escaped, so no string can close it) and from there only through
//! `textContent` and attributes. The page's own policy (a `Content-Security-Policy` meta)
//! allows exactly its one script and its one style sheet, by hash.

use crate::dot::colour;
use crate::graph::Graph;
use crate::layout::{module_min_width, node_label, node_width, short_label, Endpoint, Layout};
use crate::plan::{Action, Change};
use crate::svg::escape;
use base64::Engine as _;
use serde::Serialize;
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};

/// The page's script.
pub const SCRIPT: &str = include_str!("graph.js");

const STYLE: &str = r#"
body { margin: 0; font: 13px Helvetica, Arial, sans-serif; color: #1d2330; display: flex; flex-direction: column; height: 100vh; }
header { display: flex; flex-wrap: wrap; gap: .8rem; align-items: center; padding: .5rem .8rem; border-bottom: 1px solid #dde1e8; background: #f7f8fa; }
header h1 { font-size: 14px; margin: 0 .6rem 0 0; }
#view { position: relative; flex: 1; overflow: hidden; cursor: grab; background: #fff; }
#view.dragging { cursor: grabbing; }
#stage { transform-origin: 0 0; }
.hidden, .gone { display: none; }
g.module.collapsed, g.module .hdr, g.module .label { cursor: pointer; }
g.module.collapsed:hover .frame, g.module.expanded .hdr:hover ~ .frame { stroke: #2563eb; stroke-width: 2; }
"#;

/// The page for `g`.
pub fn page(g: &Graph, include_noop: bool, title: &str) -> String {
    page_with(g, &Layout::of(g, include_noop), include_noop, title)
}

fn csp_hash(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// What the page's script reads: see graph.js.
#[derive(Serialize)]
struct Model<'a> {
    geometry: BTreeMap<&'static str, f64>,
    #[serde(rename = "rootMinW")]
    root_min_w: f64,
    actions: Vec<&'a str>,
    colours: Vec<&'static str>,
    types: Vec<&'a str>,
    nodes: Vec<NodeModel<'a>>,
    boxes: Vec<BoxModel<'a>>,
    /// The top level's columns (an item is a node index, or -(box index + 1)).
    root: Vec<Vec<i64>>,
    /// Pairs of node indices, flat: dependent, dependency, ...
    edges: Vec<usize>,
}

/// A drawn node: address, label, action, type, box (or -1), width, deposed key (an array
/// on the page, to keep it small).
type NodeModel<'a> = (&'a str, String, usize, usize, i64, f64, Option<&'a str>);

#[derive(Serialize)]
struct BoxModel<'a> {
    /// Address.
    a: &'a str,
    /// Label (shortened address).
    l: String,
    /// Counts line.
    n: String,
    cw: f64,
    ch: f64,
    /// Least width open.
    mw: f64,
    /// Parent box, or -1.
    p: i64,
    /// Starts collapsed.
    c: bool,
    /// Columns.
    k: Vec<Vec<i64>>,
}

/// The page for `g`, given its layout (the one `mille render` also draws as `graph.svg`).
pub fn page_with(g: &Graph, layout: &Layout, include_noop: bool, title: &str) -> String {
    let shown = |c: &Change| include_noop || c.action != Action::NoOp;
    let mut actions: Vec<&str> = Vec::new();
    let mut colours = Vec::new();
    let mut types: BTreeSet<&str> = BTreeSet::new();
    for c in g.nodes.iter().filter(|c| shown(c)) {
        types.insert(&c.ty);
        if !actions.contains(&c.action.key()) {
            actions.push(c.action.key());
            colours.push(colour(&c.action));
        }
    }
    let type_ix: BTreeMap<&str, usize> = types.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let box_ix: BTreeMap<&str, usize> = layout
        .modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.address.as_str(), i))
        .collect();
    // Drawn nodes are renumbered densely, in graph order.
    let mut node_ix: BTreeMap<usize, usize> = BTreeMap::new();
    let mut nodes = Vec::new();
    for (i, c) in g.nodes.iter().enumerate().filter(|(_, c)| shown(c)) {
        node_ix.insert(i, nodes.len());
        let action = actions
            .iter()
            .position(|a| *a == c.action.key())
            .unwrap_or(0);
        let module = c
            .module
            .as_deref()
            .and_then(|m| box_ix.get(m))
            .map_or(-1, |&b| b as i64);
        nodes.push((
            c.address.as_str(),
            short_label(c),
            action,
            type_ix.get(c.ty.as_str()).copied().unwrap_or(0),
            module,
            node_width(c),
            c.deposed.as_deref(),
        ));
    }
    let item = |e: &Endpoint| -> i64 {
        match e {
            Endpoint::Node(i) => node_ix.get(i).map_or(-1, |&n| n as i64),
            Endpoint::Module(b) => -(*b as i64) - 1,
        }
    };
    let columns = |container: &str| -> Vec<Vec<i64>> {
        layout
            .columns
            .get(container)
            .map(|cols| cols.iter().map(|c| c.iter().map(item).collect()).collect())
            .unwrap_or_default()
    };
    let boxes = layout
        .modules
        .iter()
        .map(|m| {
            let parent = crate::graph::parent_instance(&m.address);
            BoxModel {
                a: &m.address,
                l: node_label(&m.address),
                n: m.counts
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                cw: m.collapsed_size.0,
                ch: m.collapsed_size.1,
                mw: module_min_width(&m.address),
                p: box_ix.get(parent.as_str()).map_or(-1, |&b| b as i64),
                c: m.collapsed,
                k: columns(&m.address),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (a, b) in &g.edges {
        if let (Some(&x), Some(&y)) = (node_ix.get(a), node_ix.get(b)) {
            edges.extend([x, y]);
        }
    }
    let model = Model {
        geometry: crate::layout::GEOMETRY.into_iter().collect(),
        root_min_w: module_min_width(""),
        actions: actions.clone(),
        colours,
        types: types.iter().copied().collect(),
        nodes,
        boxes,
        root: columns(""),
        edges,
    };
    let mut filters = String::new();
    let mut sorted = actions;
    sorted.sort_unstable();
    for a in sorted {
        filters.push_str(&format!(
            "<label><input type=\"checkbox\" class=\"action\" value=\"{0}\" checked> {0}</label> ",
            escape(a)
        ));
    }
    let options = |items: &mut dyn Iterator<Item = &str>, root: &str| -> String {
        items
            .map(|t| {
                format!(
                    "<option value=\"{}\">{}</option>",
                    escape(t),
                    escape(if t.is_empty() { root } else { t })
                )
            })
            .collect()
    };
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    );
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style>
</head>
<body>
<header>
  <h1>{title}</h1>
  <span>{filters}</span>
  <select id="type"><option value="">every type</option>{type_options}</select>
  <select id="module"><option value="">every module</option>{module_options}</select>
  <button id="zoom-in" title="zoom in">+</button><button id="zoom-out" title="zoom out">−</button><button id="fit">fit</button>
  <button id="expand-all">expand all</button><button id="overview">overview</button>
  <span id="status"></span>
</header>
<div id="view"><div id="stage"></div></div>
<script type="application/json" id="model">"#,
        title = escape(title),
        type_options = options(&mut types.iter().copied(), ""),
        module_options = options(&mut layout.modules.iter().map(|m| m.address.as_str()), ""),
    );
    // The model is written straight into the page, escaped as it goes.
    let mut bytes = page.into_bytes();
    let _ = serde_json::to_writer(ScriptSafe(&mut bytes), &model);
    bytes.extend_from_slice(b"</script>\n<script>");
    bytes.extend_from_slice(SCRIPT.as_bytes());
    bytes.extend_from_slice(b"</script>\n</body>\n</html>\n");
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends JSON to a page with `<`, `>` and `&` written as `\u003c`, `\u003e` and `\u0026`
/// (in JSON they occur only inside strings, and in UTF-8 only as themselves), so nothing in
/// the data can end its `<script>` element.
struct ScriptSafe<'a>(&'a mut Vec<u8>);

impl std::io::Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.extend_from_slice(&buf[start..i]);
            self.0.extend_from_slice(escaped);
            start = i + 1;
        }
        self.0.extend_from_slice(&buf[start..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
