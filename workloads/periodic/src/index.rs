//! Building and updating an index: walk the folder (ripgrep's `ignore` crate: `.gitignore`,
//! `.ignore` and hidden files respected), keep what has not changed (same size and
//! modification time, or else the same content hash), parse the rest across every core,
//! then derive the pattern table, the Bloom filter and the clone groups, and write the index
//! ([`crate::store`]). A run that finds nothing changed writes nothing.

use crate::fingerprint::{analyse, parse_only, Analysis, Parsers, Settings, Subtree, Winnow};
use crate::lang::Lang;
use crate::store::{self, Check, FileRec, Index, OpenError, PatternRec, Tables};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// What an update did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Files indexed.
    pub files: usize,
    /// Files parsed this run (new or changed).
    pub parsed: usize,
    /// Files whose content was hashed because their size or time changed.
    pub hashed: usize,
    /// Files gone since the last run.
    pub removed: usize,
    /// Patterns (fingerprints seen twice or more, folded ones left out).
    pub patterns: usize,
    /// Clone groups.
    pub clones: usize,
    /// Wall time, s.
    pub seconds: f64,
    /// Of which walking the folder and reading and parsing files, s.
    pub parse_seconds: f64,
    /// Of which finding patterns and clones, s.
    pub derive_seconds: f64,
    /// Why the previous index was not used, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt_because: Option<String>,
    /// Whether the index file was written.
    pub written: bool,
}

/// The default index of a folder: `DIR/.periodic/index`.
pub fn default_path(dir: &Path) -> PathBuf {
    dir.join(".periodic").join("index")
}

/// A source file found by [`walk`].
pub struct Found {
    /// Its path relative to the folder, with `/`.
    pub rel: String,
    /// Its path.
    pub abs: PathBuf,
    /// Its language.
    pub lang: Lang,
    /// Its size.
    pub size: u64,
    /// Its modification time, ns.
    pub mtime_ns: u64,
}

/// One file of the new index: kept from the old one, or analysed now.
enum Source {
    Kept(usize),
    New(Box<(Analysis, [u8; 16])>),
}

/// The source files of `dir` (`.gitignore`d and hidden ones left out, and anything under
/// `skip`), sorted by path.
pub fn walk(dir: &Path, skip: &Path) -> Vec<Found> {
    let index_path = skip;
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(true)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .build();
    for entry in walker.flatten() {
        let path = entry.path();
        if !entry.file_type().is_some_and(|t| t.is_file()) || path.starts_with(index_path) {
            continue;
        }
        let Some(lang) = Lang::of_path(path) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        out.push(Found {
            rel,
            abs: path.to_path_buf(),
            lang,
            size: meta.len(),
            mtime_ns: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64),
        });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out.dedup_by(|a, b| a.rel == b.rel);
    out
}

/// What tree-sitter alone costs on a folder: see [`ceiling`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Ceiling {
    /// Source files read and parsed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Nodes visited (0 without `visit`).
    pub nodes: u64,
    /// Wall time of the walk, the reads and the parses.
    pub seconds: f64,
    /// `files` over `seconds`.
    pub files_per_s: f64,
}

/// Walks `dir` as [`update`] does, then reads and parses every source file on every core
/// (one parser per thread, as `update`), dropping each tree: the rate no index built with
/// tree-sitter can pass on this machine. With `visit`, each tree's nodes are also stepped
/// through once.
pub fn ceiling(dir: &Path, visit: bool) -> Ceiling {
    let t0 = std::time::Instant::now();
    let found = walk(dir, &default_path(dir));
    let (bytes, nodes) = found
        .par_iter()
        .map_init(Parsers::default, |parsers, f| {
            let source = std::fs::read(&f.abs).unwrap_or_default();
            let nodes = parse_only(parsers, f.lang, &source, visit);
            (source.len() as u64, nodes)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let seconds = t0.elapsed().as_secs_f64();
    Ceiling {
        files: found.len(),
        bytes,
        nodes,
        seconds,
        files_per_s: found.len() as f64 / seconds.max(1e-9),
    }
}

fn hash16(bytes: &[u8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    h
}

/// Builds or updates the index of `dir` at `index_path`. `progress` is told the number of
/// files to parse, then once per file parsed.
pub fn update(
    dir: &Path,
    index_path: &Path,
    settings: Settings,
    progress: &(dyn Fn(Progress) + Sync),
) -> std::io::Result<Report> {
    let t0 = std::time::Instant::now();
    let mut report = Report::default();
    let old = match Index::open(index_path, Check::Full) {
        Ok(i) if i.settings == settings => Some(i),
        Ok(_) => {
            report.rebuilt_because = Some("it was built with other settings".into());
            None
        }
        Err(OpenError::Missing(_)) => None,
        Err(e) => {
            report.rebuilt_because = Some(e.to_string());
            None
        }
    };
    let old_by_path: HashMap<&str, usize> = old
        .as_ref()
        .map(|i| {
            i.files()
                .iter()
                .enumerate()
                .map(|(n, f)| (i.path_of(f), n))
                .collect()
        })
        .unwrap_or_default();
    let found = walk(dir, index_path);
    report.files = found.len();
    // Unchanged by size and time: kept without reading.
    let mut sources: Vec<Option<Source>> = found
        .iter()
        .map(|f| {
            let &n = old_by_path.get(f.rel.as_str())?;
            let rec = old.as_ref()?.files()[n];
            (rec.size == f.size && rec.mtime_ns == f.mtime_ns).then_some(Source::Kept(n))
        })
        .collect();
    let todo: Vec<usize> = (0..found.len()).filter(|&i| sources[i].is_none()).collect();
    progress(Progress::Start(todo.len()));
    let done: Vec<(usize, Source, bool)> = todo
        .par_iter()
        .map_init(Parsers::default, |parsers, &i| {
            let f = &found[i];
            let bytes = std::fs::read(&f.abs).unwrap_or_default();
            let hash = hash16(&bytes);
            // Touched but the same bytes: kept, not parsed.
            if let Some(&n) = old_by_path.get(f.rel.as_str()) {
                if old.as_ref().is_some_and(|o| o.files()[n].hash == hash) {
                    progress(Progress::Step);
                    return (i, Source::Kept(n), false);
                }
            }
            let a = analyse(parsers, f.lang, &bytes, i as u32, &settings);
            progress(Progress::Step);
            (i, Source::New(Box::new((a, hash))), true)
        })
        .collect();
    report.hashed = done.len();
    report.parse_seconds = t0.elapsed().as_secs_f64();
    for (i, s, parsed) in done {
        report.parsed += usize::from(parsed);
        sources[i] = Some(s);
    }
    report.removed = old_by_path.len().saturating_sub(
        found
            .iter()
            .filter(|f| old_by_path.contains_key(f.rel.as_str()))
            .count(),
    );
    let unchanged = old.is_some()
        && report.parsed == 0
        && report.removed == 0
        && old.as_ref().is_some_and(|o| o.files().len() == found.len())
        && sources.iter().zip(&found).all(|(s, f)| match s {
            Some(Source::Kept(n)) => old.as_ref().is_some_and(|o| {
                let r = o.files()[*n];
                r.size == f.size && r.mtime_ns == f.mtime_ns
            }),
            _ => false,
        });
    if unchanged {
        let o = old.as_ref().map(summary_of).unwrap_or_default();
        report.patterns = o.0;
        report.clones = o.1;
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    // Assemble the new tables.
    let mut old_imports: HashMap<u32, Vec<String>> = HashMap::new();
    if let Some(o) = old.as_ref() {
        for (f, m) in o.imports() {
            old_imports.entry(f).or_default().push(m.to_string());
        }
    }
    let mut t = Tables {
        settings,
        root: dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .to_string_lossy()
            .into_owned(),
        ..Tables::default()
    };
    for (i, (f, s)) in found.iter().zip(sources).enumerate() {
        let file = i as u32;
        let (subs, wins, lines, errors, hash, imports): Kept = match s {
            Some(Source::Kept(n)) => {
                let Some(o) = old.as_ref() else { continue };
                let r = &o.files()[n];
                let subs = o
                    .subtrees_of(r)
                    .iter()
                    .map(|s| Subtree { file, ..*s })
                    .collect();
                let wins = o
                    .winnows_of(r)
                    .iter()
                    .map(|w| Winnow { file, ..*w })
                    .collect();
                let imports = old_imports.remove(&(n as u32)).unwrap_or_default();
                (subs, wins, r.lines, r.had_errors != 0, r.hash, imports)
            }
            Some(Source::New(b)) => {
                let (a, hash) = *b;
                (
                    a.subtrees,
                    a.winnows,
                    a.lines,
                    a.had_errors,
                    hash,
                    a.imports,
                )
            }
            None => continue,
        };
        for m in imports {
            t.imports.push_str(&format!("{file}\t{m}\n"));
        }
        t.files.push(FileRec {
            path_off: t.paths.len() as u64,
            size: f.size,
            mtime_ns: f.mtime_ns,
            hash,
            sub_start: t.subtrees.len() as u64,
            win_start: t.winnows.len() as u64,
            path_len: f.rel.len() as u32,
            sub_count: subs.len() as u32,
            win_count: wins.len() as u32,
            lines,
            lang: f.lang.id(),
            had_errors: u32::from(errors),
        });
        t.paths.extend_from_slice(f.rel.as_bytes());
        t.subtrees.extend(subs);
        t.winnows.extend(wins);
    }
    drop(old);
    let t1 = std::time::Instant::now();
    derive(&mut t);
    report.derive_seconds = t1.elapsed().as_secs_f64();
    report.patterns = t.patterns.iter().filter(|p| p.subsumed == 0).count();
    report.clones = t.clones.last().map_or(0, |c| c.group as usize + 1);
    store::write(index_path, &t)?;
    report.written = true;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// A file's records, kept or new: subtrees, winnows, lines, errors, hash, imports.
type Kept = (Vec<Subtree>, Vec<Winnow>, u32, bool, [u8; 16], Vec<String>);

/// Progress of an update.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// This many files will be read.
    Start(usize),
    /// One more is done.
    Step,
}

fn summary_of(i: &Index) -> (usize, usize) {
    (
        i.patterns().iter().filter(|p| p.subsumed == 0).count(),
        i.clones().last().map_or(0, |c| c.group as usize + 1),
    )
}

/// Patterns, the Bloom filter and clone groups, from the files' subtrees and winnows (the
/// clone groups on one core while the patterns are found on the other).
fn derive(t: &mut Tables) {
    let (winnows, settings) = (std::mem::take(&mut t.winnows), t.settings);
    let ((), (clones, win_by_hash, winnows)) = rayon::join(
        || derive_patterns(t),
        || {
            let clones = crate::clones::groups(&winnows, &settings);
            let mut by_hash: Vec<[u64; 2]> = winnows
                .iter()
                .enumerate()
                .map(|(i, w)| [w.hash, i as u64])
                .collect();
            by_hash.sort_unstable();
            (clones, by_hash, winnows)
        },
    );
    t.clones = clones;
    t.win_by_hash = win_by_hash;
    t.winnows = winnows;
}

fn derive_patterns(t: &mut Tables) {
    // Patterns: fingerprints kept twice or more (grouped by sorting, not hashing: one
    // flat vector instead of a map of vectors).
    let mut by_fp: Vec<(u64, u32)> = t
        .subtrees
        .iter()
        .enumerate()
        .map(|(i, s)| (s.fp, i as u32))
        .collect();
    by_fp.sort_unstable();
    let (bits, k) = store::bloom_build(t.subtrees.iter().map(|s| s.fp), t.subtrees.len());
    t.bloom = bits;
    t.bloom_k = k;
    let count_of = |fp: u64| {
        let lo = by_fp.partition_point(|x| x.0 < fp);
        by_fp[lo..].iter().take_while(|x| x.0 == fp).count()
    };
    t.singles = by_fp
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|r| r.len() == 1)
        .map(|r| [r[0].0, u64::from(r[0].1)])
        .collect();
    for run in by_fp.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() >= 2) {
        let fp = run[0].0;
        let first = t.subtrees[run[0].1 as usize];
        // Folded into a bigger pattern when every occurrence has the same kept parent and
        // that parent is seen as often.
        let parent = first.parent;
        let subsumed = parent != 0
            && run
                .iter()
                .all(|&(_, o)| t.subtrees[o as usize].parent == parent)
            && count_of(parent) == run.len();
        let mut files: Vec<u32> = run
            .iter()
            .map(|&(_, o)| t.subtrees[o as usize].file)
            .collect();
        files.sort_unstable();
        files.dedup();
        t.patterns.push(PatternRec {
            fp,
            occ_start: t.occurrences.len() as u64,
            count: run.len() as u32,
            size: first.size,
            kind: first.kind,
            lines: first.end_line - first.start_line + 1,
            subsumed: u32::from(subsumed),
            files: files.len() as u32,
        });
        t.occurrences.extend(run.iter().map(|&(_, o)| u64::from(o)));
    }
}
