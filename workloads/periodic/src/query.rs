//! `periodic match`: the code structurally like a given place (`FILE:LINE`) or snippet.
//! The probe is fingerprinted as the index was; its fingerprint is looked up through the
//! Bloom filter (a miss answers "never seen" without touching the tables) and the pattern
//! table (binary search), and its winnowed token hashes through the hash-sorted winnow
//! table, which finds copies that were edited a little (shared hashes along one diagonal).

use crate::fingerprint::{analyse, Parsers, Subtree};
use crate::lang::{Kind, Lang};
use crate::store::Index;
use std::collections::HashMap;
use std::path::Path;

/// Token hashes of a probe looked up at most (an even sample of a bigger probe's).
pub const MAX_PROBE_HASHES: usize = 256;

/// What is being matched.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its subtree.
    pub subtree: Subtree,
    /// Its winnowed token hashes.
    pub hashes: Vec<u64>,
    /// Its language.
    pub lang: Lang,
}

/// A place like the probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// File (relative to the indexed folder).
    pub file: String,
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// Same shape as the probe (names and constants aside).
    pub exact: bool,
    /// Share of the probe's token hashes found here (1.0 for exact ones).
    pub similarity: f64,
}

/// Why a probe could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// Not a language periodic reads.
    #[error("{0}: not a language periodic reads (rust, python, javascript, typescript, tsx, go)")]
    Language(String),
    /// Nothing big enough there.
    #[error("{0}")]
    TooSmall(String),
}

/// The token hashes that lie within a subtree's lines.
fn hashes_within(winnows: &[crate::fingerprint::Winnow], s: &Subtree) -> Vec<u64> {
    winnows
        .iter()
        .filter(|w| w.start_line >= s.start_line && w.end_line <= s.end_line)
        .map(|w| w.hash)
        .collect()
}

fn pick(subtrees: &[Subtree], line: u32) -> Option<Subtree> {
    // The biggest kept subtree starting on the line; else the smallest holding it.
    subtrees
        .iter()
        .filter(|s| s.start_line == line)
        .max_by_key(|s| s.size)
        .or_else(|| {
            subtrees
                .iter()
                .filter(|s| s.start_line <= line && line <= s.end_line)
                .min_by_key(|s| s.size)
        })
        .copied()
}

/// The probe at `line` of a file the index holds as it is now (same size and modification
/// time): read from the index, without parsing the file again.
fn probe_indexed(path: &Path, line: u32, idx: &Index) -> Option<Probe> {
    let root = Path::new(idx.root()).canonicalize().ok()?;
    let abs = path.canonicalize().ok()?;
    let rel = abs
        .strip_prefix(&root)
        .ok()?
        .to_string_lossy()
        .replace('\\', "/");
    let files = idx.files();
    let i = files
        .binary_search_by(|f| idx.path_of(f).cmp(rel.as_str()))
        .ok()?;
    let f = &files[i];
    let meta = std::fs::metadata(&abs).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    if meta.len() != f.size || mtime != f.mtime_ns {
        return None;
    }
    let subtree = pick(idx.subtrees_of(f), line)?;
    let hashes = hashes_within(idx.winnows_of(f), &subtree);
    Some(Probe {
        subtree,
        hashes,
        lang: Lang::from_id(f.lang)?,
    })
}

/// The probe at `line` of the file at `path`: from the index when it holds the file as it
/// is, else by parsing the file.
pub fn probe_file(path: &Path, line: u32, idx: &Index) -> Result<Probe, ProbeError> {
    if let Some(p) = probe_indexed(path, line, idx) {
        return Ok(p);
    }
    let name = path.display().to_string();
    let lang = Lang::of_path(path).ok_or_else(|| ProbeError::Language(name.clone()))?;
    let bytes = std::fs::read(path).map_err(|e| ProbeError::Read(name.clone(), e))?;
    let a = analyse(&mut Parsers::default(), lang, &bytes, 0, &idx.settings);
    let subtree = pick(&a.subtrees, line).ok_or_else(|| {
        ProbeError::TooSmall(format!(
            "{name}:{line}: no code of {} nodes or more there (the smallest the index keeps)",
            idx.settings.min_nodes
        ))
    })?;
    let hashes = hashes_within(&a.winnows, &subtree);
    Ok(Probe {
        subtree,
        hashes,
        lang,
    })
}

/// The probe of a snippet of `lang`. A snippet that is not a whole file (a statement, a
/// loop) is read inside a function, as it would appear in one.
pub fn probe_snippet(text: &str, lang: Lang, idx: &Index) -> Result<Probe, ProbeError> {
    let wrapped = match lang {
        Lang::Rust => Some(("fn periodic_snippet() {\n", "\n}\n")),
        Lang::Go => Some(("package p\nfunc periodicSnippet() {\n", "\n}\n")),
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => {
            Some(("function periodicSnippet() {\n", "\n}\n"))
        }
        Lang::Python => None,
    };
    let mut parsers = Parsers::default();
    let whole = analyse(&mut parsers, lang, text.as_bytes(), 0, &idx.settings);
    let (a, offset) = match wrapped {
        Some((head, tail)) if whole.had_errors || whole.subtrees.is_empty() => {
            let source = format!("{head}{text}{tail}");
            (
                analyse(&mut parsers, lang, source.as_bytes(), 0, &idx.settings),
                head.len() as u32,
            )
        }
        _ => (whole, 0),
    };
    // The biggest subtree of the snippet itself (not the function wrapped around it).
    let subtree = a
        .subtrees
        .iter()
        .filter(|s| s.start_byte >= offset)
        .max_by_key(|s| s.size)
        .copied()
        .ok_or_else(|| {
            ProbeError::TooSmall(format!(
                "the snippet has no part of {} nodes or more (the smallest the index keeps)",
                idx.settings.min_nodes
            ))
        })?;
    let hashes = hashes_within(&a.winnows, &subtree);
    Ok(Probe {
        subtree,
        hashes,
        lang,
    })
}

/// The places like `p`, exact ones first, then by similarity; at most `limit`.
pub fn matches(idx: &Index, p: &Probe, min_similarity: f64, limit: usize) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    if idx.maybe_seen(p.subtree.fp) {
        // A pattern (seen twice or more), or seen once, or a false positive of the filter.
        let occurrences: Vec<Subtree> = match idx.pattern(p.subtree.fp) {
            Some(pat) => idx.occurrences_of(pat).copied().collect(),
            None => idx.single(p.subtree.fp).copied().into_iter().collect(),
        };
        for s in occurrences {
            out.push(Found {
                file: idx.path_of_file(s.file).to_string(),
                start_line: s.start_line,
                end_line: s.end_line,
                exact: true,
                similarity: 1.0,
            });
        }
    }
    if !p.hashes.is_empty() {
        // A copy edited a little shares most of the probe's hashes, close together: group
        // the hits by file, then by nearby lines. A big probe's similarity is estimated
        // from an even sample of its hashes: each is a lookup in the index, and thousands
        // of them made the biggest probes slow without changing what is found.
        let sample: Vec<u64> = if p.hashes.len() > MAX_PROBE_HASHES {
            (0..MAX_PROBE_HASHES)
                .map(|i| p.hashes[i * p.hashes.len() / MAX_PROBE_HASHES])
                .collect()
        } else {
            p.hashes.clone()
        };
        let mut per_file: HashMap<u32, Vec<(u32, u32, u64)>> = HashMap::new();
        for &h in &sample {
            for w in idx.winnows_with(h, crate::clones::MAX_PLACES) {
                per_file
                    .entry(w.file)
                    .or_default()
                    .push((w.start_line, w.end_line, h));
            }
        }
        let span = p.subtree.end_line - p.subtree.start_line + 1;
        let mut distinct_sample = sample.clone();
        distinct_sample.sort_unstable();
        distinct_sample.dedup();
        let total = distinct_sample.len() as f64;
        for (file, mut hits) in per_file {
            hits.sort_unstable();
            // Clusters of hits no further apart than the probe is long.
            let mut cluster: Vec<(u32, u32, u64)> = Vec::new();
            let mut emit = |c: &mut Vec<(u32, u32, u64)>| {
                if c.is_empty() {
                    return;
                }
                let mut distinct: Vec<u64> = c.iter().map(|x| x.2).collect();
                distinct.sort_unstable();
                distinct.dedup();
                let similarity = distinct.len() as f64 / total;
                let start = c.iter().map(|x| x.0).min().unwrap_or(0);
                let end = c.iter().map(|x| x.1).max().unwrap_or(0);
                if similarity >= min_similarity {
                    out.push(Found {
                        file: idx.path_of_file(file).to_string(),
                        start_line: start,
                        end_line: end,
                        exact: false,
                        similarity: similarity.min(1.0),
                    });
                }
                c.clear();
            };
            for h in hits {
                if cluster.last().is_some_and(|l| h.0 > l.1 + span) {
                    emit(&mut cluster);
                }
                cluster.push(h);
            }
            emit(&mut cluster);
        }
    }
    // An exact place also found by its hashes is shown once, as exact.
    let exact: Vec<(String, u32, u32)> = out
        .iter()
        .filter(|f| f.exact)
        .map(|f| (f.file.clone(), f.start_line, f.end_line))
        .collect();
    out.retain(|f| {
        f.exact
            || !exact
                .iter()
                .any(|(file, s, e)| *file == f.file && f.start_line <= *e && *s <= f.end_line)
    });
    out.sort_by(|a, b| {
        b.exact
            .cmp(&a.exact)
            .then(b.similarity.total_cmp(&a.similarity))
            .then_with(|| (a.file.as_str(), a.start_line).cmp(&(b.file.as_str(), b.start_line)))
    });
    if limit > 0 {
        out.truncate(limit);
    }
    out
}

/// The probe's kind's name.
pub fn kind_of(p: &Probe) -> &'static str {
    Kind::from_id(p.subtree.kind).name()
}
