//! The graph as Graphviz DOT: one cluster per module instance (nested as the modules are),
//! nodes coloured by action, no-op changes left out unless asked for.

use crate::graph::Graph;
use crate::plan::Action;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Fill colour per action.
pub fn colour(a: &Action) -> &'static str {
    match a {
        Action::Create => "#c8f7d4",
        Action::Update => "#cfe3ff",
        Action::Replace { .. } => "#ffe4b0",
        Action::Delete => "#ffc9c9",
        Action::Read => "#e6e0ff",
        Action::NoOp => "#f1f3f6",
        Action::Other(_) => "#fff3bf",
    }
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The DOT text of `g`.
pub fn render(g: &Graph, include_noop: bool) -> String {
    let shown: Vec<bool> = g
        .nodes
        .iter()
        .map(|c| include_noop || c.action != Action::NoOp)
        .collect();
    let out = String::from(
        "digraph plan {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n  edge [color=\"#8890a0\"];\n",
    );
    // Module instances as a tree, so that clusters nest.
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let modules = g.modules();
    let mut all: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for m in modules.keys().filter(|m| !m.is_empty()) {
        let mut cur = m.clone();
        while !cur.is_empty() && all.insert(cur.clone()) {
            let parent = crate::graph::parent_instance(&cur);
            children
                .entry(parent.clone())
                .or_default()
                .push(cur.clone());
            cur = parent;
        }
    }
    let mut w = Writer {
        g,
        shown: &shown,
        modules: &modules,
        children: &children,
        next: 0,
        out,
    };
    w.emit("", 0);
    let mut out = w.out;
    for &(a, b) in &g.edges {
        if shown[a] && shown[b] {
            let _ = writeln!(out, "  n{a} -> n{b};");
        }
    }
    out.push_str("}\n");
    out
}

/// Writes nodes and nested clusters.
struct Writer<'a> {
    g: &'a Graph,
    shown: &'a [bool],
    modules: &'a BTreeMap<String, Vec<usize>>,
    children: &'a BTreeMap<String, Vec<String>>,
    next: usize,
    out: String,
}

impl Writer<'_> {
    fn emit(&mut self, m: &str, depth: usize) {
        let indent = "  ".repeat(depth + 1);
        for &i in self.modules.get(m).into_iter().flatten() {
            if !self.shown[i] {
                continue;
            }
            let c = &self.g.nodes[i];
            let label = match &c.deposed {
                Some(k) => format!("{}\n(deposed {k})", c.address),
                None => c.address.clone(),
            };
            let _ = writeln!(
                self.out,
                "{indent}n{i} [label={}, fillcolor={}, tooltip={}];",
                quote(&label),
                quote(colour(&c.action)),
                quote(c.action.key())
            );
        }
        for child in self.children.get(m).into_iter().flatten() {
            self.next += 1;
            let _ = writeln!(self.out, "{indent}subgraph cluster_{} {{", self.next);
            let _ = writeln!(self.out, "{indent}  label={};", quote(child));
            let _ = writeln!(self.out, "{indent}  style=\"rounded\"; color=\"#b8bfcc\";");
            self.emit(child, depth + 1);
            let _ = writeln!(self.out, "{indent}}}");
        }
    }
}
