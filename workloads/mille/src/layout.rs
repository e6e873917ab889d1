//! A compound layered layout, computed here rather than in a browser or by Graphviz (the
//! tools users compare mille with either freeze the browser at a few thousand nodes or wait
//! minutes for `dot`; see the workload's README section), so it is linear-ish in the graph
//! and always finishes.
//!
//! Every module instance is a box laid out on its own: its items are its own resources and
//! its child modules' boxes (laid out first, bottom up). Items are layered left to right by
//! the longest chain of dependencies among them (a dependency left of what depends on it;
//! edges between modules count for the modules' boxes; cycles are broken where a depth-first
//! walk meets them), ordered within a layer by the mean position of their dependencies (two
//! sweeps), and stacked in columns. Boxes never overlap, and a module's resources stay
//! inside its box.
//!
//! Level of detail: above [`DETAIL_NODES`] drawn resources, modules below the top level are
//! collapsed into one box each that counts its changes by action.

use crate::graph::{parent_instance, Graph};
use crate::plan::Action;
use std::collections::{BTreeMap, BTreeSet};

/// Above this many drawn resources, nested modules start collapsed.
pub const DETAIL_NODES: usize = 400;

const NODE_H: f64 = 26.0;
const GAP_X: f64 = 48.0;
const GAP_Y: f64 = 12.0;
const PAD: f64 = 12.0;
const LABEL_H: f64 = 22.0;
const CHAR_W: f64 = 6.4;
const MAX_LABEL: usize = 56;

/// A placed rectangle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left.
    pub x: f64,
    /// Top.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl Rect {
    /// Whether two rectangles overlap (touching edges do not).
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// A module instance's box.
#[derive(Debug, Clone)]
pub struct ModuleBox {
    /// The module instance address.
    pub address: String,
    /// Where it is.
    pub rect: Rect,
    /// Collapsed: its changes are counted, not drawn.
    pub collapsed: bool,
    /// Counts by action of the changes inside (all levels).
    pub counts: BTreeMap<String, usize>,
}

/// The laid-out graph.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Width of the whole drawing.
    pub width: f64,
    /// Height of the whole drawing.
    pub height: f64,
    /// Drawn resources: node index → rectangle.
    pub nodes: BTreeMap<usize, Rect>,
    /// Module boxes, outer ones first.
    pub modules: Vec<ModuleBox>,
    /// Edges to draw, between drawn items: (from, to) rectangles' owners as
    /// [`Endpoint`]s.
    pub edges: BTreeSet<(Endpoint, Endpoint)>,
}

/// One end of a drawn edge: a resource or a collapsed module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// A resource node.
    Node(usize),
    /// A collapsed module box (index into [`Layout::modules`]).
    Module(usize),
}

/// The label a node shows (long addresses are shortened in the middle; the full one is in
/// its tooltip).
pub fn node_label(address: &str) -> String {
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= MAX_LABEL {
        return address.to_string();
    }
    let keep = (MAX_LABEL - 1) / 2;
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head}…{tail}")
}

/// What a resource's box says: its address within its module (the box around it names the
/// module), shortened if long.
pub fn short_label(c: &crate::plan::Change) -> String {
    let rel = match &c.module {
        Some(m) => c
            .address
            .strip_prefix(m.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or(&c.address),
        None => &c.address,
    };
    match &c.deposed {
        Some(k) => node_label(&format!("{rel} (deposed {k})")),
        None => node_label(rel),
    }
}

fn text_w(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W + 16.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Node(usize),
    Module(usize),
}

struct Builder<'a> {
    g: &'a Graph,
    shown: Vec<bool>,
    children: BTreeMap<String, Vec<String>>,
    collapsed: BTreeSet<String>,
    /// Module instance → index in `modules`.
    module_ix: BTreeMap<String, usize>,
    modules: Vec<ModuleBox>,
    /// Item → size, and item → position relative to its container.
    size: BTreeMap<(String, Item), (f64, f64)>,
    local: BTreeMap<Item, (String, f64, f64)>,
}

impl Layout {
    /// Lays out `g`; no-op changes are drawn only with `include_noop`.
    pub fn of(g: &Graph, include_noop: bool) -> Layout {
        let shown: Vec<bool> = g
            .nodes
            .iter()
            .map(|c| include_noop || c.action != Action::NoOp)
            .collect();
        let drawn = shown.iter().filter(|s| **s).count();
        // Module instance tree (only instances holding drawn changes, and their ancestors).
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut all = BTreeSet::new();
        for (i, c) in g.nodes.iter().enumerate() {
            if !shown[i] {
                continue;
            }
            let mut cur = c.module.clone().unwrap_or_default();
            while !cur.is_empty() && all.insert(cur.clone()) {
                let parent = parent_instance(&cur);
                children
                    .entry(parent.clone())
                    .or_default()
                    .push(cur.clone());
                cur = parent;
            }
        }
        let depth = |m: &str| crate::plan::module_names(m).len();
        let collapsed: BTreeSet<String> = if drawn > DETAIL_NODES {
            all.iter().filter(|m| depth(m) == 1).cloned().collect()
        } else {
            BTreeSet::new()
        };
        let mut b = Builder {
            g,
            shown,
            children,
            collapsed,
            module_ix: BTreeMap::new(),
            modules: Vec::new(),
            size: BTreeMap::new(),
            local: BTreeMap::new(),
        };
        let (w, h) = b.container("");
        let mut layout = Layout {
            width: w,
            height: h,
            ..Layout::default()
        };
        b.place("", 0.0, 0.0, &mut layout);
        layout.modules = b.modules.clone();
        // Edges between drawn endpoints: a node inside a collapsed module stands for it.
        for &(a, c) in &g.edges {
            if let (Some(x), Some(y)) = (b.endpoint(a), b.endpoint(c)) {
                if x != y {
                    layout.edges.insert((x, y));
                }
            }
        }
        layout
    }
}

impl Builder<'_> {
    /// The items directly in container `m`.
    fn items(&mut self, m: &str) -> Vec<Item> {
        let mut out = Vec::new();
        for (i, c) in self.g.nodes.iter().enumerate() {
            if self.shown[i] && c.module.as_deref().unwrap_or("") == m {
                out.push(Item::Node(i));
            }
        }
        for child in self.children.get(m).cloned().unwrap_or_default() {
            let ix = self.module_index(&child);
            out.push(Item::Module(ix));
        }
        out
    }

    fn module_index(&mut self, m: &str) -> usize {
        if let Some(&i) = self.module_ix.get(m) {
            return i;
        }
        let mut counts = BTreeMap::new();
        for (i, c) in self.g.nodes.iter().enumerate() {
            let cm = c.module.as_deref().unwrap_or("");
            if self.shown[i] && (cm == m || cm.starts_with(&format!("{m}."))) {
                *counts.entry(c.action.key().to_string()).or_insert(0) += 1;
            }
        }
        self.modules.push(ModuleBox {
            address: m.to_string(),
            rect: Rect {
                x: 0.0,
                y: 0.0,
                w: 0.0,
                h: 0.0,
            },
            collapsed: self.collapsed.contains(m),
            counts,
        });
        self.module_ix.insert(m.to_string(), self.modules.len() - 1);
        self.modules.len() - 1
    }

    /// The item of container `m` that holds node `i`, if `i` is inside `m`.
    fn item_of(&self, m: &str, i: usize) -> Option<Item> {
        let cm = self.g.nodes[i].module.as_deref().unwrap_or("");
        if cm == m {
            return Some(Item::Node(i));
        }
        let inside = m.is_empty() || cm.starts_with(&format!("{m}."));
        if !inside {
            return None;
        }
        // Walk up from the node's module to the child of `m`.
        let mut cur = cm.to_string();
        loop {
            let parent = parent_instance(&cur);
            if parent == m {
                return self.module_ix.get(&cur).map(|&ix| Item::Module(ix));
            }
            if parent.is_empty() {
                return None;
            }
            cur = parent;
        }
    }

    /// Sizes container `m` (laying out its children first) and records its items' places.
    fn container(&mut self, m: &str) -> (f64, f64) {
        let items = self.items(m);
        for it in &items {
            let size = match *it {
                Item::Node(i) => (text_w(&short_label(&self.g.nodes[i])), NODE_H),
                Item::Module(ix) => {
                    let addr = self.modules[ix].address.clone();
                    if self.modules[ix].collapsed {
                        let counts = self.modules[ix].counts.clone();
                        let line: Vec<String> =
                            counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                        (
                            text_w(&addr).max(text_w(&line.join(", "))),
                            LABEL_H + NODE_H,
                        )
                    } else {
                        self.container(&addr)
                    }
                }
            };
            self.size.insert((m.to_string(), *it), size);
        }
        // Dependencies among the items of this container.
        let index: BTreeMap<Item, usize> =
            items.iter().enumerate().map(|(k, it)| (*it, k)).collect();
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); items.len()];
        for &(a, c) in &self.g.edges {
            if !(self.shown[a] && self.shown[c]) {
                continue;
            }
            if let (Some(x), Some(y)) = (self.item_of(m, a), self.item_of(m, c)) {
                if x != y {
                    if let (Some(&xi), Some(&yi)) = (index.get(&x), index.get(&y)) {
                        deps[xi].insert(yi);
                    }
                }
            }
        }
        let rank = ranks(&deps);
        let layers = rank.iter().copied().max().map_or(0, |r| r + 1);
        let mut columns: Vec<Vec<usize>> = vec![Vec::new(); layers];
        for (k, &r) in rank.iter().enumerate() {
            columns[r].push(k);
        }
        // Order within a column by the mean row of the dependencies (two sweeps).
        let mut row: Vec<f64> = vec![0.0; items.len()];
        for col in &columns {
            for (r, &k) in col.iter().enumerate() {
                row[k] = r as f64;
            }
        }
        for _ in 0..2 {
            for col in columns.iter_mut().skip(1) {
                let mut keyed: Vec<(f64, usize)> = col
                    .iter()
                    .map(|&k| {
                        let d = &deps[k];
                        let b = if d.is_empty() {
                            row[k]
                        } else {
                            d.iter().map(|&x| row[x]).sum::<f64>() / d.len() as f64
                        };
                        (b, k)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                *col = keyed.into_iter().map(|(_, k)| k).collect();
                for (r, &k) in col.iter().enumerate() {
                    row[k] = r as f64;
                }
            }
        }
        let top = if m.is_empty() { PAD } else { LABEL_H + PAD };
        let mut x = PAD;
        let mut height: f64 = 0.0;
        for col in &columns {
            let mut y = top;
            let mut width: f64 = 0.0;
            for &k in col {
                let (w, h) = self.size[&(m.to_string(), items[k])];
                self.local.insert(items[k], (m.to_string(), x, y));
                y += h + GAP_Y;
                width = width.max(w);
            }
            height = height.max(y - GAP_Y);
            x += width + GAP_X;
        }
        let w = (x - GAP_X + PAD).max(text_w(m) + PAD);
        let h = (height + PAD).max(top + PAD);
        (w, h)
    }

    /// Gives every item of container `m` (placed at `ox`, `oy`) its absolute place.
    fn place(&mut self, m: &str, ox: f64, oy: f64, out: &mut Layout) {
        let items: Vec<(Item, f64, f64)> = self
            .local
            .iter()
            .filter(|(_, (c, _, _))| c == m)
            .map(|(it, (_, x, y))| (*it, *x, *y))
            .collect();
        for (it, x, y) in items {
            let (w, h) = self.size[&(m.to_string(), it)];
            let rect = Rect {
                x: ox + x,
                y: oy + y,
                w,
                h,
            };
            match it {
                Item::Node(i) => {
                    out.nodes.insert(i, rect);
                }
                Item::Module(ix) => {
                    self.modules[ix].rect = rect;
                    if !self.modules[ix].collapsed {
                        let addr = self.modules[ix].address.clone();
                        self.place(&addr, rect.x, rect.y, out);
                    }
                }
            }
        }
    }

    /// What node `i` is drawn as: itself, or the collapsed module holding it.
    fn endpoint(&self, i: usize) -> Option<Endpoint> {
        if !self.shown[i] {
            return None;
        }
        let mut cur = self.g.nodes[i].module.clone().unwrap_or_default();
        let mut holder = None;
        while !cur.is_empty() {
            if self.collapsed.contains(&cur) {
                holder = self.module_ix.get(&cur).copied();
            }
            cur = parent_instance(&cur);
        }
        Some(match holder {
            Some(ix) => Endpoint::Module(ix),
            None => Endpoint::Node(i),
        })
    }
}

/// Layers of a dependency graph: an item is one layer right of its furthest dependency.
/// Cycles are broken where a depth-first walk finds them.
fn ranks(deps: &[BTreeSet<usize>]) -> Vec<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = deps.len();
    let mut rank = vec![0usize; n];
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency to look at).
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(start, deps[start].iter().copied().collect())];
        mark[start] = Mark::Open;
        while let Some((v, pending)) = stack.last_mut() {
            let v = *v;
            match pending.pop() {
                Some(d) => match mark[d] {
                    Mark::New => {
                        mark[d] = Mark::Open;
                        stack.push((d, deps[d].iter().copied().collect()));
                    }
                    Mark::Done => rank[v] = rank[v].max(rank[d] + 1),
                    Mark::Open => {} // a cycle: this edge is ignored
                },
                None => {
                    mark[v] = Mark::Done;
                    stack.pop();
                    if let Some((parent, _)) = stack.last() {
                        let p = *parent;
                        rank[p] = rank[p].max(rank[v] + 1);
                    }
                }
            }
        }
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_put_dependencies_left_and_survive_cycles() {
        // 0 depends on 1, 1 on 2; 3 on 0 and 2; 4 <-> 5 form a cycle.
        let deps: Vec<BTreeSet<usize>> = vec![
            [1].into(),
            [2].into(),
            [].into(),
            [0, 2].into(),
            [5].into(),
            [4].into(),
        ];
        let r = ranks(&deps);
        assert_eq!(&r[..4], &[2, 1, 0, 3]);
        assert!(r[4] != r[5], "{r:?}");
    }

    #[test]
    fn long_labels_are_shortened_in_the_middle() {
        let long = "module.a.module.b.aws_iam_role_policy_attachment.this[\"arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy\"]";
        let l = node_label(long);
        assert!(l.chars().count() <= MAX_LABEL);
        assert!(l.starts_with("module.a") && l.ends_with("Policy\"]") && l.contains('…'));
    }
}
