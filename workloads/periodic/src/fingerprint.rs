//! One file's analysis: the fingerprints of its subtrees and of its token stream. This is
//! periodic's core, so it is written here rather than taken from a crate: no crate computes
//! abstracted subtree hashes over tree-sitter trees.
//!
//! - A subtree's fingerprint hashes its shape: each node's grammar kind and its children's
//!   fingerprints, in order, with every identifier replaced by one placeholder and every
//!   literal (strings, numbers, ...) by another, and comments left out. Two copies of a
//!   function that differ only in names and constants have one fingerprint. Subtrees of at
//!   least [`Settings::min_nodes`] nodes are kept, each with its nearest kept ancestor (so a
//!   pattern only ever seen inside a bigger one can be folded into it).
//! - The token stream (leaves, abstracted the same way) is cut into k-grams of
//!   [`Settings::k`] tokens, hashed, and winnowed (the minimum hash of every window of
//!   [`Settings::window`] k-grams is kept; Schleimer, Wilkerson and Aiken, SIGMOD 2003):
//!   a copied run of at least `k + window - 1` tokens is sure to share a kept hash with its
//!   original. Clone detection chains those shared hashes.

use crate::lang::{Kind, Lang};
use bytemuck::{Pod, Zeroable};

/// How files are fingerprinted (kept in the index: an index built with other settings is
/// rebuilt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Smallest subtree kept, in nodes.
    pub min_nodes: u32,
    /// Tokens per k-gram.
    pub k: u32,
    /// Winnowing window, in k-grams.
    pub window: u32,
}

impl Default for Settings {
    fn default() -> Self {
        // k + window - 1 = 55 tokens: a copied run that long is always seen (jscpd's
        // default is 50 tokens), with about one k-gram in 12 kept.
        Settings {
            min_nodes: 24,
            k: 32,
            window: 24,
        }
    }
}

/// A kept subtree.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Subtree {
    /// Its fingerprint.
    pub fp: u64,
    /// Its nearest kept ancestor's fingerprint (0: none).
    pub parent: u64,
    /// The file it is in (index in the index's file table).
    pub file: u32,
    /// Nodes in it.
    pub size: u32,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// Its root's [`Kind`] id.
    pub kind: u32,
    /// Byte offset of its start in the file.
    pub start_byte: u32,
}

/// A kept k-gram hash.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Winnow {
    /// The k-gram's hash.
    pub hash: u64,
    /// The file it is in.
    pub file: u32,
    /// Position of its first token in the file's token stream.
    pub token: u32,
    /// Line of its first token.
    pub start_line: u32,
    /// Line of its last token.
    pub end_line: u32,
}

/// A file's analysis.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Kept subtrees, in post order (children before their parent).
    pub subtrees: Vec<Subtree>,
    /// Kept k-gram hashes, in token order.
    pub winnows: Vec<Winnow>,
    /// Lines in the file.
    pub lines: u32,
    /// Whether the parser had to recover from syntax errors.
    pub had_errors: bool,
    /// The modules its import statements name ([`crate::deps::modules_of`]).
    pub imports: Vec<String>,
}

const IDENT: u64 = 0x1d;
const LITERAL: u64 = 0x11;

#[inline]
fn mix(h: u64, x: u64) -> u64 {
    // A 64-bit multiply-xorshift step (as in splitmix64): cheap, and good enough that two
    // different shapes colliding is not a practical concern.
    let mut z = (h ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Frame {
    h: u64,
    size: u32,
    start_line: u32,
    start_byte: u32,
    /// Kept subtrees below this node not yet given their parent.
    orphans: Vec<usize>,
    named: bool,
}

/// What a node kind is to the fingerprints, decided once per grammar (by kind id) rather
/// than by looking at names per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Comment,
    /// An identifier when it is a leaf.
    Ident,
    Literal,
    Other,
}

struct Grammar {
    parser: tree_sitter::Parser,
    class: Vec<Class>,
    kind: Vec<u32>,
    import: Vec<bool>,
}

fn is_import(lang: Lang, kind: &str) -> bool {
    match lang {
        Lang::Rust => matches!(kind, "use_declaration" | "mod_item"),
        Lang::Python => matches!(kind, "import_statement" | "import_from_statement"),
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => {
            matches!(kind, "import_statement" | "export_statement")
        }
        Lang::Go => kind == "import_spec",
    }
}

/// A reusable parser per language (one per thread), with its kind tables.
#[derive(Default)]
pub struct Parsers {
    grammars: Vec<Option<Grammar>>,
}

impl Parsers {
    fn get(&mut self, lang: Lang) -> Option<&mut Grammar> {
        let ix = lang.id() as usize;
        if self.grammars.len() <= ix {
            self.grammars.resize_with(ix + 1, || None);
        }
        if self.grammars[ix].is_none() {
            let language = lang.grammar();
            let mut parser = tree_sitter::Parser::new();
            parser.set_language(&language).ok()?;
            let n = language.node_kind_count();
            let mut class = Vec::with_capacity(n);
            let mut kind = Vec::with_capacity(n);
            let mut import = Vec::with_capacity(n);
            for id in 0..n as u16 {
                let name = language.node_kind_for_id(id).unwrap_or_default();
                class.push(if name.contains("comment") {
                    Class::Comment
                } else if name.contains("identifier") || name == "self" || name == "this" {
                    Class::Ident
                } else if is_literal(name) {
                    Class::Literal
                } else {
                    Class::Other
                });
                kind.push(Kind::of_node(name).id());
                import.push(is_import(lang, name));
            }
            self.grammars[ix] = Some(Grammar {
                parser,
                class,
                kind,
                import,
            });
        }
        self.grammars[ix].as_mut()
    }
}

fn is_literal(kind: &str) -> bool {
    kind.contains("string")
        || kind.contains("literal")
        || kind.contains("char")
        || kind.contains("number")
        || kind == "integer"
        || kind == "float"
        || kind == "true"
        || kind == "false"
}

/// Parses `source` as `lang` and drops the tree, nothing else; with `visit`, also steps a
/// cursor through every node (what any walk of the tree costs at least). Returns the nodes
/// visited. For `periodic ceiling`: what tree-sitter alone costs on a corpus, the floor
/// under [`analyse`].
pub fn parse_only(parsers: &mut Parsers, lang: Lang, source: &[u8], visit: bool) -> u64 {
    let Some(grammar) = parsers.get(lang) else {
        return 0;
    };
    let Some(tree) = grammar.parser.parse(source, None) else {
        return 0;
    };
    if !visit {
        return 0;
    }
    let mut cursor = tree.root_node().walk();
    let mut nodes = 1u64;
    loop {
        if cursor.goto_first_child() || cursor.goto_next_sibling() {
            nodes += 1;
            continue;
        }
        loop {
            if !cursor.goto_parent() {
                return nodes;
            }
            if cursor.goto_next_sibling() {
                nodes += 1;
                break;
            }
        }
    }
}

/// Analyses `source` as `lang`, for file number `file`.
pub fn analyse(
    parsers: &mut Parsers,
    lang: Lang,
    source: &[u8],
    file: u32,
    s: &Settings,
) -> Analysis {
    let mut out = Analysis {
        lines: source.iter().filter(|&&b| b == b'\n').count() as u32
            + u32::from(!source.is_empty() && !source.ends_with(b"\n")),
        ..Analysis::default()
    };
    let Some(grammar) = parsers.get(lang) else {
        return out;
    };
    let Some(tree) = grammar.parser.parse(source, None) else {
        return out;
    };
    let (class, kinds, imports) = (&grammar.class, &grammar.kind, &grammar.import);
    let root = tree.root_node();
    out.had_errors = root.has_error();
    let lang_salt = mix(0x5eed, u64::from(lang.id()));
    let mut tokens: Vec<(u64, u32)> = Vec::new();
    let mut cursor = root.walk();
    let mut stack: Vec<Frame> = Vec::new();
    // Depth first. An atom, a leaf or a comment is done when entered; an inner node gets a
    // frame, its children are walked, and it is finished (folded into its parent's frame)
    // when the walk climbs back to it.
    loop {
        let node = cursor.node();
        let id = node.kind_id();
        let named = node.is_named();
        let start_line = node.start_position().row as u32 + 1;
        let c = class.get(usize::from(id)).copied().unwrap_or(Class::Other);
        // (Whether a node has children is learnt by trying to enter it: one call, not two.)
        let token = if c == Class::Comment {
            None
        } else if named && c == Class::Literal {
            Some(mix(lang_salt, LITERAL))
        } else if cursor.goto_first_child() {
            if imports.get(usize::from(id)).copied().unwrap_or(false) {
                let text = source
                    .get(node.start_byte()..node.end_byte())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or_default();
                let js = matches!(lang, Lang::JavaScript | Lang::TypeScript | Lang::Tsx);
                if !js || text.starts_with("import") || text.contains(" from ") {
                    out.imports.extend(crate::deps::modules_of(lang, text));
                }
            }
            stack.push(Frame {
                h: mix(lang_salt, u64::from(id)),
                size: 1,
                start_line,
                start_byte: node.start_byte() as u32,
                orphans: Vec::new(),
                named,
            });
            continue;
        } else if node.is_missing() {
            None
        } else if named && c == Class::Ident {
            Some(mix(lang_salt, IDENT))
        } else {
            Some(mix(lang_salt, u64::from(id) << 8))
        };
        if let Some(h) = token {
            tokens.push((h, start_line));
            if let Some(f) = stack.last_mut() {
                f.h = mix(f.h, h);
                f.size += 1;
            }
        }
        // Climb until a next sibling, finishing each inner node climbed back to.
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                out.winnows = winnow(&tokens, file, s);
                return out;
            }
            if let Some(f) = stack.pop() {
                let node = cursor.node();
                let kind = kinds.get(usize::from(node.kind_id())).copied().unwrap_or(0);
                finish(f, node, kind, file, s, &mut stack, &mut out.subtrees);
            }
        }
    }
}

/// Folds a finished inner node into its parent frame, keeping it if big enough.
fn finish(
    mut f: Frame,
    node: tree_sitter::Node,
    kind: u32,
    file: u32,
    s: &Settings,
    stack: &mut [Frame],
    kept: &mut Vec<Subtree>,
) {
    // The file's root is not a pattern.
    let is_root = stack.is_empty();
    if f.named && f.size >= s.min_nodes && !is_root {
        let ix = kept.len();
        for &o in &f.orphans {
            kept[o].parent = f.h;
        }
        kept.push(Subtree {
            fp: f.h,
            parent: 0,
            file,
            size: f.size,
            start_line: f.start_line,
            end_line: node.end_position().row as u32 + 1,
            kind,
            start_byte: f.start_byte,
        });
        f.orphans = vec![ix];
    }
    if let Some(p) = stack.last_mut() {
        p.h = mix(p.h, f.h);
        p.size += f.size;
        p.orphans.append(&mut f.orphans);
    }
}

/// The winnowed k-gram hashes of a token stream: a rolling polynomial hash per k-gram
/// (constant work per token, whatever k), then the rightmost minimum of every window of
/// `window` k-grams with a monotonic queue (constant work per k-gram, whatever the window).
fn winnow(tokens: &[(u64, u32)], file: u32, s: &Settings) -> Vec<Winnow> {
    const B: u64 = 0x0100_0000_01b3;
    let k = s.k.max(1) as usize;
    let w = s.window.max(1) as usize;
    if tokens.len() < k {
        return Vec::new();
    }
    let bk = (0..k).fold(1u64, |p, _| p.wrapping_mul(B));
    let mut grams: Vec<u64> = Vec::with_capacity(tokens.len() - k + 1);
    let mut h = 0u64;
    for (i, t) in tokens.iter().enumerate() {
        h = h.wrapping_mul(B).wrapping_add(t.0);
        if i >= k {
            h = h.wrapping_sub(tokens[i - k].0.wrapping_mul(bk));
        }
        if i + 1 >= k {
            grams.push(mix(h, 0x6b67));
        }
    }
    let mut out: Vec<Winnow> = Vec::new();
    let mut last: Option<usize> = None;
    // Indices of k-grams whose hash is strictly less than every later one in the window.
    let mut queue: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    for i in 0..grams.len() {
        while queue.back().is_some_and(|&j| grams[j] >= grams[i]) {
            queue.pop_back();
        }
        queue.push_back(i);
        if queue.front().is_some_and(|&j| j + w <= i) {
            queue.pop_front();
        }
        // A full window ends at i (or the stream is shorter than one window).
        if i + 1 >= w || i + 1 == grams.len() {
            let Some(&best) = queue.front() else {
                continue;
            };
            if last != Some(best) {
                last = Some(best);
                out.push(Winnow {
                    hash: grams[best],
                    file,
                    token: best as u32,
                    start_line: tokens[best].1,
                    end_line: tokens[best + k - 1].1,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward definition the fast one must agree with.
    fn winnow_slow(tokens: &[(u64, u32)], s: &Settings) -> Vec<(u64, u32)> {
        const B: u64 = 0x0100_0000_01b3;
        let (k, w) = (s.k as usize, s.window as usize);
        if tokens.len() < k {
            return Vec::new();
        }
        let grams: Vec<u64> = tokens
            .windows(k)
            .map(|g| {
                mix(
                    g.iter()
                        .fold(0u64, |h, t| h.wrapping_mul(B).wrapping_add(t.0)),
                    0x6b67,
                )
            })
            .collect();
        let mut out = Vec::new();
        let mut last = None;
        let windows = grams.len().saturating_sub(w - 1).max(1);
        for start in 0..windows {
            let end = (start + w).min(grams.len());
            let mut best = start;
            for i in start..end {
                if grams[i] <= grams[best] {
                    best = i;
                }
            }
            if last != Some(best) {
                last = Some(best);
                out.push((grams[best], best as u32));
            }
        }
        out
    }

    #[test]
    fn rolling_winnowing_agrees_with_the_definition() {
        let s = Settings {
            min_nodes: 24,
            k: 5,
            window: 4,
        };
        let mut x = 7u64;
        for len in [0, 3, 5, 6, 8, 9, 40, 500] {
            // Few distinct tokens, so that windows hold ties.
            let tokens: Vec<(u64, u32)> = (0..len)
                .map(|i| {
                    x = mix(x, 1);
                    (x % 4, i as u32)
                })
                .collect();
            let fast: Vec<(u64, u32)> = winnow(&tokens, 0, &s)
                .iter()
                .map(|w| (w.hash, w.token))
                .collect();
            assert_eq!(fast, winnow_slow(&tokens, &s), "{len} tokens");
        }
    }
}
