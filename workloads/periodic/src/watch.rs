//! `periodic watch DIR`: the index kept current as files change. The index is loaded once
//! into memory (every file's subtrees, token hashes and imports), file events come from the
//! `notify` crate, and each changed file is re-analysed alone: its old fingerprints leave
//! the counts and its new ones enter, so the patterns the edit touches, the clone regions it
//! shares with other files and the files that import it (the dependency graph of
//! [`crate::deps`]) are known at once, without rebuilding anything. The index file is
//! rewritten in the background once edits settle, for the other commands to read.

use crate::deps;
use crate::fingerprint::{analyse, Parsers, Settings, Subtree, Winnow};
use crate::index::{self, Progress};
use crate::lang::Lang;
use crate::store::{Check, Index};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct FileState {
    lang: Lang,
    subtrees: Vec<Subtree>,
    winnows: Vec<Winnow>,
    imports: Vec<String>,
}

/// The in-memory index `watch` keeps.
pub struct Live {
    root: PathBuf,
    settings: Settings,
    files: BTreeMap<String, FileState>,
    /// Fingerprint → occurrences.
    counts: HashMap<u64, u32>,
    /// Token hash → files holding it.
    hashes: HashMap<u64, Vec<String>>,
    /// The import graph: file → what it imports, and file → what imports it.
    imports_of: HashMap<String, BTreeSet<String>>,
    importers: HashMap<String, BTreeSet<String>>,
    parsers: Parsers,
}

/// What one edit changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// The file (relative to the folder).
    pub file: String,
    /// `changed`, `added` or `removed`.
    pub what: &'static str,
    /// Patterns that exist now and did not before (a fingerprint reaching two occurrences).
    pub patterns_added: usize,
    /// Patterns that existed before and do not now.
    pub patterns_removed: usize,
    /// Patterns whose count changed and that still exist.
    pub patterns_changed: usize,
    /// Patterns in the index after the edit.
    pub patterns: usize,
    /// Other files sharing copied code with this one after the edit.
    pub clones_with: Vec<String>,
    /// Files that import this one (directly or through others).
    pub dependents: Vec<String>,
    /// Time from the event to this answer, ms.
    pub ms: f64,
}

fn patterns_in(counts: &HashMap<u64, u32>) -> usize {
    counts.values().filter(|&&c| c >= 2).count()
}

impl Live {
    /// Loads the index of `root` at `index_path` (building or updating it first).
    pub fn load(root: &Path, index_path: &Path, settings: Settings) -> std::io::Result<Live> {
        index::update(root, index_path, settings, &|_: Progress| {})?;
        let idx = Index::open(index_path, Check::Full)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut imports: HashMap<u32, Vec<String>> = HashMap::new();
        for (f, m) in idx.imports() {
            imports.entry(f).or_default().push(m.to_string());
        }
        let mut live = Live {
            root: root.to_path_buf(),
            settings,
            files: BTreeMap::new(),
            counts: HashMap::new(),
            hashes: HashMap::new(),
            imports_of: HashMap::new(),
            importers: HashMap::new(),
            parsers: Parsers::default(),
        };
        for (i, f) in idx.files().iter().enumerate() {
            let path = idx.path_of(f).to_string();
            let state = FileState {
                lang: Lang::from_id(f.lang).unwrap_or(Lang::Rust),
                subtrees: idx.subtrees_of(f).to_vec(),
                winnows: idx.winnows_of(f).to_vec(),
                imports: imports.remove(&(i as u32)).unwrap_or_default(),
            };
            live.enter(&path, &state);
            live.files.insert(path, state);
        }
        live.rebuild_graph();
        Ok(live)
    }

    fn rebuild_graph(&mut self) {
        let names: HashSet<String> = self.files.keys().cloned().collect();
        self.imports_of.clear();
        self.importers.clear();
        let all: Vec<String> = self.files.keys().cloned().collect();
        for f in all {
            self.link(&names, &f);
        }
    }

    /// Resolves `file`'s imports into the graph.
    fn link(&mut self, names: &HashSet<String>, file: &str) {
        let Some(s) = self.files.get(file) else {
            return;
        };
        let targets: BTreeSet<String> = s
            .imports
            .iter()
            .flat_map(|m| deps::resolve(names, file, s.lang, m))
            .collect();
        for t in &targets {
            self.importers
                .entry(t.clone())
                .or_default()
                .insert(file.to_string());
        }
        self.imports_of.insert(file.to_string(), targets);
    }

    fn unlink(&mut self, file: &str) {
        for t in self.imports_of.remove(file).unwrap_or_default() {
            if let Some(v) = self.importers.get_mut(&t) {
                v.remove(file);
            }
        }
    }

    fn enter(&mut self, path: &str, s: &FileState) {
        for t in &s.subtrees {
            *self.counts.entry(t.fp).or_insert(0) += 1;
        }
        for w in &s.winnows {
            let v = self.hashes.entry(w.hash).or_default();
            if !v.iter().any(|p| p == path) {
                v.push(path.to_string());
            }
        }
    }

    fn leave(&mut self, path: &str, s: &FileState) {
        for t in &s.subtrees {
            if let Some(c) = self.counts.get_mut(&t.fp) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&t.fp);
                }
            }
        }
        for w in &s.winnows {
            if let Some(v) = self.hashes.get_mut(&w.hash) {
                v.retain(|p| p != path);
                if v.is_empty() {
                    self.hashes.remove(&w.hash);
                }
            }
        }
    }

    /// Files that import `path`, transitively.
    pub fn dependents_of(&self, path: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![path.to_string()];
        while let Some(f) = todo.pop() {
            for d in self.importers.get(&f).into_iter().flatten() {
                if d != path && out.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// Re-reads one file (relative path) and says what changed.
    pub fn apply(&mut self, rel: &str, started: Instant) -> Option<Change> {
        let abs = self.root.join(rel);
        let lang = Lang::of_path(&abs)?;
        let old = self.files.remove(rel);
        let before: HashMap<u64, u32> = old
            .iter()
            .flat_map(|s| s.subtrees.iter().map(|t| t.fp))
            .map(|fp| (fp, self.counts.get(&fp).copied().unwrap_or(0)))
            .collect();
        if let Some(s) = &old {
            self.leave(rel, s);
        }
        let what = match std::fs::read(&abs) {
            Ok(bytes) => {
                let a = analyse(&mut self.parsers, lang, &bytes, 0, &self.settings);
                let state = FileState {
                    lang,
                    subtrees: a.subtrees,
                    winnows: a.winnows,
                    imports: a.imports,
                };
                self.enter(rel, &state);
                self.files.insert(rel.to_string(), state);
                if old.is_some() {
                    "changed"
                } else {
                    "added"
                }
            }
            Err(_) if old.is_some() => "removed",
            Err(_) => return None,
        };
        // The import graph: a changed file's own edges are redone; a file that appears or
        // disappears can change what other files' imports resolve to, so the graph is
        // redone whole.
        if what == "changed" {
            let names: HashSet<String> = self.files.keys().cloned().collect();
            self.unlink(rel);
            self.link(&names, rel);
        } else {
            self.rebuild_graph();
        }
        let mut touched: HashMap<u64, u32> = before;
        if let Some(s) = self.files.get(rel) {
            for t in &s.subtrees {
                touched.entry(t.fp).or_insert_with(|| {
                    // Not in the old file: its count before the edit.
                    self.counts
                        .get(&t.fp)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(s.subtrees.iter().filter(|x| x.fp == t.fp).count() as u32)
                });
            }
        }
        let (mut added, mut removed, mut changed) = (0, 0, 0);
        for (fp, was) in &touched {
            let now = self.counts.get(fp).copied().unwrap_or(0);
            match (*was >= 2, now >= 2) {
                (false, true) => added += 1,
                (true, false) => removed += 1,
                (true, true) if now != *was => changed += 1,
                _ => {}
            }
        }
        let mut clones_with: BTreeSet<String> = BTreeSet::new();
        if let Some(s) = self.files.get(rel) {
            for w in &s.winnows {
                for p in self.hashes.get(&w.hash).into_iter().flatten() {
                    if p != rel {
                        clones_with.insert(p.clone());
                    }
                }
            }
        }
        Some(Change {
            file: rel.to_string(),
            what,
            patterns_added: added,
            patterns_removed: removed,
            patterns_changed: changed,
            patterns: patterns_in(&self.counts),
            clones_with: clones_with.into_iter().collect(),
            dependents: self.dependents_of(rel),
            ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

/// What `watch` tells its caller.
#[derive(Debug)]
pub enum Event<'a> {
    /// The index is loaded and the folder watched.
    Watching,
    /// A file changed.
    Change(&'a Change),
    /// The index file was rewritten with every change so far (for the other commands).
    Written {
        /// How long the rewrite took, ms.
        ms: f64,
    },
}

/// Watches `root` until `stop` says so, calling `report` for each [`Event`]. The index file
/// is rewritten after edits settle for `settle`.
pub fn run(
    root: &Path,
    index_path: &Path,
    settings: Settings,
    settle: Duration,
    report: &mut dyn FnMut(Event),
    stop: &dyn Fn() -> bool,
) -> Result<(), String> {
    use notify::Watcher as _;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let mut live = Live::load(&root, index_path, settings).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let _ = tx.send((ev, Instant::now()));
        }
    })
    .map_err(|e| format!("cannot watch: {e}"))?;
    watcher
        .watch(&root, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
    let index_dir = index_path
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_default();
    let ignore = {
        let mut b = ignore::gitignore::GitignoreBuilder::new(&root);
        b.add(root.join(".gitignore"));
        b.build().ok()
    };
    report(Event::Watching);
    let mut dirty_since: Option<Instant> = None;
    let (written_tx, written_rx) = std::sync::mpsc::channel::<f64>();
    // One background rewrite at a time (they would share a temporary file).
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    while !stop() {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((ev, at)) => {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    continue;
                }
                let mut seen = BTreeSet::new();
                for p in ev.paths {
                    if p.starts_with(&index_dir) || Lang::of_path(&p).is_none() {
                        continue;
                    }
                    let Ok(rel) = p.strip_prefix(&root) else {
                        continue;
                    };
                    let hidden = rel
                        .components()
                        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
                    let ignored = ignore
                        .as_ref()
                        .is_some_and(|g| g.matched_path_or_any_parents(rel, false).is_ignore());
                    if hidden || ignored {
                        continue;
                    }
                    let rel = rel.to_string_lossy().replace('\\', "/");
                    if seen.insert(rel.clone()) {
                        if let Some(c) = live.apply(&rel, at) {
                            report(Event::Change(&c));
                            dirty_since = Some(Instant::now());
                        }
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if dirty_since.is_some_and(|t| t.elapsed() >= settle)
            && !writing.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            dirty_since = None;
            let (r, i, busy) = (root.clone(), index_path.to_path_buf(), writing.clone());
            let done = written_tx.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let ok = index::update(&r, &i, settings, &|_: Progress| {}).is_ok();
                busy.store(false, std::sync::atomic::Ordering::Release);
                if ok {
                    let _ = done.send(t0.elapsed().as_secs_f64() * 1000.0);
                }
            });
        }
        while let Ok(ms) = written_rx.try_recv() {
            report(Event::Written { ms });
        }
    }
    Ok(())
}
