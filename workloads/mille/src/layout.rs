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
    /// Its size when collapsed (its size expanded is its container's).
    pub collapsed_size: (f64, f64),
    /// Inside a collapsed module: not drawn, and `rect` means nothing.
    pub hidden: bool,
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
    /// Every container's items in columns, left to right, each column top to bottom: `""`
    /// is the top level, else a module instance's address. Collapsed modules' insides are
    /// here too, so that `graph.html` can expand a module in place: sizes change, columns
    /// and their order do not, and the same stacking rule ([`GEOMETRY`]) places them again.
    pub columns: BTreeMap<String, Vec<Vec<Endpoint>>>,
}

/// The stacking rule's constants, shared with `graph.html`'s script so that it places items
/// exactly as this module does: node height, gaps between columns and rows, padding, the
/// height of a module's label row.
pub const GEOMETRY: [(&str, f64); 5] = [
    ("nodeH", NODE_H),
    ("gapX", GAP_X),
    ("gapY", GAP_Y),
    ("pad", PAD),
    ("labelH", LABEL_H),
];

/// Width of a resource's box.
pub fn node_width(c: &crate::plan::Change) -> f64 {
    text_w(&short_label(c))
}

/// Width of a module's frame at least (its label must fit).
pub fn module_min_width(address: &str) -> f64 {
    text_w(address) + PAD
}

/// One end of a drawn edge (a resource or a collapsed module), or an item of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

type Item = Endpoint;

struct Builder<'a> {
    g: &'a Graph,
    shown: Vec<bool>,
    children: BTreeMap<String, Vec<String>>,
    collapsed: BTreeSet<String>,
    /// Module instance → index in `modules`.
    module_ix: BTreeMap<String, usize>,
    modules: Vec<ModuleBox>,
    /// Item → size as drawn, and item → position relative to its container.
    size: BTreeMap<Item, (f64, f64)>,
    local: BTreeMap<Item, (f64, f64)>,
    columns: BTreeMap<String, Vec<Vec<Item>>>,
    /// Drawn nodes by the module that holds them directly.
    direct: BTreeMap<String, Vec<usize>>,
    /// Edges between drawn nodes, by the innermost container holding both ends (the only
    /// one where they join two different items).
    edges_at: BTreeMap<String, Vec<(usize, usize)>>,
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
        // A container holding more than DETAIL_NODES drawn changes starts with its modules
        // collapsed: at the top level that is the whole drawing, and a big module expanded
        // in graph.html opens with its own modules collapsed in turn.
        let mut below: BTreeMap<String, usize> = BTreeMap::new();
        for (i, c) in g.nodes.iter().enumerate() {
            if !shown[i] {
                continue;
            }
            let mut cur = c.module.clone().unwrap_or_default();
            while !cur.is_empty() {
                *below.entry(cur.clone()).or_insert(0) += 1;
                cur = parent_instance(&cur);
            }
        }
        let collapsed: BTreeSet<String> = all
            .iter()
            .filter(|m| {
                let parent = parent_instance(m);
                let held = if parent.is_empty() {
                    drawn
                } else {
                    below.get(&parent).copied().unwrap_or(0)
                };
                held > DETAIL_NODES
            })
            .cloned()
            .collect();
        let mut b = Builder {
            g,
            shown,
            children,
            collapsed,
            module_ix: BTreeMap::new(),
            modules: Vec::new(),
            size: BTreeMap::new(),
            local: BTreeMap::new(),
            columns: BTreeMap::new(),
            direct: BTreeMap::new(),
            edges_at: BTreeMap::new(),
        };
        for (i, c) in g.nodes.iter().enumerate() {
            if b.shown[i] {
                let m = c.module.clone().unwrap_or_default();
                b.direct.entry(m).or_default().push(i);
            }
        }
        for &(a, c) in &g.edges {
            if b.shown[a] && b.shown[c] {
                let (ma, mc) = (&g.nodes[a].module, &g.nodes[c].module);
                let common =
                    common_container(ma.as_deref().unwrap_or(""), mc.as_deref().unwrap_or(""));
                b.edges_at.entry(common).or_default().push((a, c));
            }
        }
        // Parents before children (a prefix sorts first): outer boxes are drawn first.
        for m in &all {
            b.module_index(m);
        }
        let (w, h) = b.container("");
        let mut layout = Layout {
            width: w,
            height: h,
            ..Layout::default()
        };
        for m in &mut b.modules {
            m.hidden = true;
        }
        b.place("", 0.0, 0.0, &mut layout);
        layout.modules = std::mem::take(&mut b.modules);
        // Edges between drawn endpoints: a node inside a collapsed module stands for it.
        for &(a, c) in &g.edges {
            if let (Some(x), Some(y)) = (b.endpoint(a), b.endpoint(c)) {
                if x != y {
                    layout.edges.insert((x, y));
                }
            }
        }
        layout.columns = std::mem::take(&mut b.columns);
        layout
    }
}

impl Builder<'_> {
    /// The items directly in container `m`.
    fn items(&mut self, m: &str) -> Vec<Item> {
        let mut out: Vec<Item> = self
            .direct
            .get(m)
            .map(|v| v.iter().map(|&i| Item::Node(i)).collect())
            .unwrap_or_default();
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
            collapsed_size: (0.0, 0.0),
            hidden: false,
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

    /// Sizes container `m` (laying out every child module first, collapsed or not, so that
    /// its inside is known) and records its items' places.
    fn container(&mut self, m: &str) -> (f64, f64) {
        let items = self.items(m);
        for it in &items {
            let size = match *it {
                Item::Node(i) => (node_width(&self.g.nodes[i]), NODE_H),
                Item::Module(ix) => {
                    let addr = self.modules[ix].address.clone();
                    let line: Vec<String> = self.modules[ix]
                        .counts
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect();
                    // The label is drawn after a two-character marker (▸).
                    let folded = (
                        (text_w(&addr) + 2.0 * CHAR_W).max(text_w(&line.join(", "))),
                        LABEL_H + NODE_H,
                    );
                    self.modules[ix].collapsed_size = folded;
                    let open = self.container(&addr);
                    if self.modules[ix].collapsed {
                        folded
                    } else {
                        open
                    }
                }
            };
            self.size.insert(*it, size);
        }
        // Dependencies among the items of this container.
        let index: BTreeMap<Item, usize> =
            items.iter().enumerate().map(|(k, it)| (*it, k)).collect();
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); items.len()];
        for &(a, c) in self.edges_at.get(m).map_or(&[][..], |v| &v[..]) {
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
        let columns: Vec<Vec<Item>> = columns
            .iter()
            .map(|col| col.iter().map(|&k| items[k]).collect())
            .collect();
        for col in &columns {
            let mut y = top;
            let mut width: f64 = 0.0;
            for it in col {
                let (w, h) = self.size[it];
                self.local.insert(*it, (x, y));
                y += h + GAP_Y;
                width = width.max(w);
            }
            height = height.max(y - GAP_Y);
            x += width + GAP_X;
        }
        self.columns.insert(m.to_string(), columns);
        let w = (x - GAP_X + PAD).max(module_min_width(m));
        let h = (height + PAD).max(top + PAD);
        (w, h)
    }

    /// Gives every item of container `m` (placed at `ox`, `oy`) its absolute place.
    fn place(&mut self, m: &str, ox: f64, oy: f64, out: &mut Layout) {
        let items: Vec<Item> = self
            .columns
            .get(m)
            .map(|cols| cols.iter().flatten().copied().collect())
            .unwrap_or_default();
        for it in items {
            let (w, h) = self.size[&it];
            let (x, y) = self.local[&it];
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
                    self.modules[ix].hidden = false;
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

/// The innermost container holding both module instances `a` and `b` (`""` is the top
/// level).
fn common_container(a: &str, b: &str) -> String {
    let mut up = BTreeSet::new();
    let mut cur = a.to_string();
    loop {
        up.insert(cur.clone());
        if cur.is_empty() {
            break;
        }
        cur = parent_instance(&cur);
    }
    let mut cur = b.to_string();
    while !up.contains(&cur) {
        cur = parent_instance(&cur);
    }
    cur
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
