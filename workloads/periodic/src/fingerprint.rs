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
        Settings {
            min_nodes: 24,
            k: 24,
            window: 8,
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

/// Whether a node is read as one token: an identifier, or a literal (strings keep their
/// quotes and escapes as children in some grammars; they are one literal here).
fn atom(kind: &str, leaf: bool) -> Option<u64> {
    if kind.contains("identifier") && leaf || kind == "self" || kind == "this" {
        Some(IDENT)
    } else if kind.contains("string")
        || kind.contains("literal")
        || kind.contains("char")
        || kind.contains("number")
        || kind == "integer"
        || kind == "float"
        || kind == "true"
        || kind == "false"
    {
        Some(LITERAL)
    } else {
        None
    }
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

/// A reusable parser per language (one per thread).
#[derive(Default)]
pub struct Parsers {
    parsers: Vec<Option<tree_sitter::Parser>>,
}

impl Parsers {
    fn get(&mut self, lang: Lang) -> Option<&mut tree_sitter::Parser> {
        let ix = lang.id() as usize;
        if self.parsers.len() <= ix {
            self.parsers.resize_with(ix + 1, || None);
        }
        if self.parsers[ix].is_none() {
            let mut p = tree_sitter::Parser::new();
            p.set_language(&lang.grammar()).ok()?;
            self.parsers[ix] = Some(p);
        }
        self.parsers[ix].as_mut()
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
    let Some(parser) = parsers.get(lang) else {
        return out;
    };
    let Some(tree) = parser.parse(source, None) else {
        return out;
    };
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
        let kind = node.kind();
        let leaf = node.child_count() == 0;
        let start_line = node.start_position().row as u32 + 1;
        let token = if kind.contains("comment") || node.is_missing() {
            None
        } else if let Some(tag) = atom(kind, leaf).filter(|_| node.is_named()) {
            Some(mix(lang_salt, tag))
        } else if leaf {
            Some(mix(lang_salt, u64::from(node.kind_id()) << 8))
        } else {
            stack.push(Frame {
                h: mix(lang_salt, u64::from(node.kind_id())),
                size: 1,
                start_line,
                start_byte: node.start_byte() as u32,
                orphans: Vec::new(),
                named: node.is_named(),
            });
            if cursor.goto_first_child() {
                continue;
            }
            None
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
                finish(f, cursor.node(), file, s, &mut stack, &mut out.subtrees);
            }
        }
    }
}

/// Folds a finished inner node into its parent frame, keeping it if big enough.
fn finish(
    mut f: Frame,
    node: tree_sitter::Node,
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
            kind: Kind::of_node(node.kind()).id(),
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

/// The winnowed k-gram hashes of a token stream.
fn winnow(tokens: &[(u64, u32)], file: u32, s: &Settings) -> Vec<Winnow> {
    let k = s.k.max(1) as usize;
    let w = s.window.max(1) as usize;
    if tokens.len() < k {
        return Vec::new();
    }
    let grams: Vec<u64> = tokens
        .windows(k)
        .map(|g| g.iter().fold(0x6b67_u64, |h, t| mix(h, t.0)))
        .collect();
    let mut out: Vec<Winnow> = Vec::new();
    let mut last: Option<usize> = None;
    for start in 0..grams.len().saturating_sub(w - 1).max(1) {
        let end = (start + w).min(grams.len());
        // The rightmost minimum of the window.
        let mut best = start;
        for i in start..end {
            if grams[i] <= grams[best] {
                best = i;
            }
        }
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
    out
}
