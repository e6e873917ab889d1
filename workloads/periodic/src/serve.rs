//! `periodic serve`: one index for a team. Developers' `periodic push` sends the files that
//! changed on their machine; each file belongs to one of N shards by a consistent hash of its
//! path (a ring with virtual nodes, so changing N moves about 1/N of the files); the server
//! keeps each file's bytes in the cache and enqueues one Weir job per shard and batch, and a
//! Weir worker pool applies the batches in parallel: it writes the files into the shard's
//! folder and updates that shard's index (only those files are parsed). After each batch the
//! shards are merged into the team's view — patterns counted across every shard, clone groups
//! over every file — and queries are answered from it through Weir's tiered cache (memory,
//! disk, and Redis with `--redis`). A cached answer about a file depends on the answers
//! about the files it imports, so a change invalidates the file's own answers and,
//! transitively, those of every file that imports it (cascading invalidation); answers about
//! the whole table are retired at once by a namespace bump.
//!
//! HTTP API: `POST /v1/files`, `GET /v1/patterns`, `POST /v1/match`, `GET /v1/clones`,
//! `GET /v1/files/{path}`, `GET /v1/status`.

use crate::fingerprint::Settings;
use crate::index::{self, Progress};
use crate::lang::{Kind, Lang};
use crate::store::{Check, Index};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_client::{Client, Concurrency, HandlerError, JobContext, WorkerBuilder};

/// The queue batches of pushed files go on.
pub const QUEUE: &str = "periodic.files";
/// Largest push, bytes.
pub const MAX_PUSH_BYTES: usize = 256 << 20;
/// Attempts of a batch before it is dead.
const MAX_ATTEMPTS: u32 = 8;
const NS_BLOBS: &str = "blobs";
const NS_TABLE: &str = "table";
const NS_FILES: &str = "files";

/// `periodic serve`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub listen: String,
    /// Where the shards, the embedded Weir and the cache keep their files.
    #[arg(long, default_value = "periodic-data")]
    pub data_dir: PathBuf,
    /// Shards (index files); a file's shard is a consistent hash of its path.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// A Weir server to use instead of the embedded one.
    #[arg(long)]
    pub weir: Option<String>,
    /// Redis, for the cache tier several periodic servers share.
    #[arg(long)]
    pub redis: Option<String>,
    /// Prefix of the Redis keys.
    #[arg(long, default_value = "periodic")]
    pub redis_prefix: String,
    /// Index workers (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Files per job.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
}

/// A consistent-hash ring: `VNODES` points per shard; a key belongs to the first point at or
/// after its hash.
pub struct Ring {
    points: Vec<(u64, u32)>,
}

const VNODES: u32 = 64;

fn hash64(s: &[u8]) -> u64 {
    let h = blake3::hash(s);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

impl Ring {
    /// A ring of `n` shards.
    pub fn new(n: u32) -> Ring {
        let mut points: Vec<(u64, u32)> = (0..n.max(1))
            .flat_map(|s| {
                (0..VNODES).map(move |v| (hash64(format!("shard-{s}-{v}").as_bytes()), s))
            })
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// The shard of `path`.
    pub fn shard_of(&self, path: &str) -> u32 {
        let h = hash64(path.as_bytes());
        let i = self.points.partition_point(|p| p.0 < h);
        self.points
            .get(i)
            .or(self.points.first())
            .map_or(0, |p| p.1)
    }
}

/// One pushed file: its content, or that it was deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedFile {
    /// Path relative to the repository root, with `/`.
    pub path: String,
    /// The file's text (absent when deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The file was deleted.
    #[serde(default)]
    pub deleted: bool,
}

/// `POST /v1/files`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Push {
    /// The files.
    pub files: Vec<PushedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BatchJob {
    shard: u32,
    /// (path, blob key or None when deleted).
    files: Vec<(String, Option<String>)>,
}

/// The team's view, merged from every shard.
#[derive(Default)]
struct Merged {
    generation: u64,
    files: usize,
    /// fingerprint → (count, kind, size, lines, locations (file, start, end)).
    patterns: Vec<MergedPattern>,
    clones: Vec<Vec<(String, u32, u32)>>,
    /// file → the files it imports.
    imports: BTreeMap<String, BTreeSet<String>>,
    /// file → what imports it.
    dependents: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Clone, Serialize)]
struct MergedPattern {
    fingerprint: String,
    kind: &'static str,
    size: u32,
    count: usize,
    lines: u32,
    locations: Vec<Location>,
}

#[derive(Clone, Serialize)]
struct Location {
    file: String,
    start_line: u32,
    end_line: u32,
}

struct Shared {
    data: PathBuf,
    ring: Ring,
    shards: u32,
    settings: Settings,
    weir: Client,
    cache: weir_cache::Cache,
    merged: RwLock<Arc<Merged>>,
    /// One shard update at a time per shard, one merge at a time.
    shard_locks: Vec<Mutex<()>>,
    merge_lock: Mutex<()>,
    pending: AtomicU64,
    batch: usize,
}

type S = State<Arc<Shared>>;

fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:periodic:problem:{}", title.to_lowercase().replace(' ', "-")),
        "title": title, "status": status.as_u16(), "detail": detail.into(),
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1000
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

impl Shared {
    fn shard_dir(&self, s: u32) -> PathBuf {
        self.data.join("shards").join(format!("{s}")).join("src")
    }

    fn shard_index(&self, s: u32) -> PathBuf {
        self.data.join("shards").join(format!("{s}")).join("index")
    }

    /// Rebuilds the merged view from every shard's index.
    fn merge(&self) {
        let _one = self.merge_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_fp: HashMap<u64, Vec<(String, crate::fingerprint::Subtree)>> = HashMap::new();
        let mut all_winnows: Vec<crate::fingerprint::Winnow> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut imports: BTreeMap<String, (Lang, Vec<String>)> = BTreeMap::new();
        for s in 0..self.shards {
            let Ok(idx) = Index::open(&self.shard_index(s), Check::Quick) else {
                continue;
            };
            let base = names.len() as u32;
            for f in idx.files() {
                names.push(idx.path_of(f).to_string());
                imports.insert(
                    idx.path_of(f).to_string(),
                    (Lang::from_id(f.lang).unwrap_or(Lang::Rust), Vec::new()),
                );
            }
            for (f, m) in idx.imports() {
                if let Some(e) = imports.get_mut(idx.path_of_file(f)) {
                    e.1.push(m.to_string());
                }
            }
            for t in idx.subtrees() {
                by_fp
                    .entry(t.fp)
                    .or_default()
                    .push((idx.path_of_file(t.file).to_string(), *t));
            }
            all_winnows.extend(idx.winnows().iter().map(|w| crate::fingerprint::Winnow {
                file: w.file + base,
                ..*w
            }));
        }
        // A pattern is a fingerprint seen twice across the team's files; one seen only
        // inside a bigger pattern as often is folded into it, as in a local index.
        let count_of = |fp: u64| by_fp.get(&fp).map_or(0, Vec::len);
        let mut patterns: Vec<MergedPattern> = by_fp
            .iter()
            .filter(|(_, v)| v.len() >= 2)
            .filter(|(_, v)| {
                let parent = v[0].1.parent;
                !(parent != 0
                    && v.iter().all(|(_, t)| t.parent == parent)
                    && count_of(parent) == v.len())
            })
            .map(|(fp, v)| MergedPattern {
                fingerprint: format!("{fp:016x}"),
                kind: Kind::from_id(v[0].1.kind).name(),
                size: v[0].1.size,
                count: v.len(),
                lines: v[0].1.end_line + 1 - v[0].1.start_line,
                locations: v
                    .iter()
                    .map(|(f, t)| Location {
                        file: f.clone(),
                        start_line: t.start_line,
                        end_line: t.end_line,
                    })
                    .collect(),
            })
            .collect();
        patterns.sort_by(|a, b| {
            (b.size, b.count, &a.fingerprint).cmp(&(a.size, a.count, &b.fingerprint))
        });
        for p in &mut patterns {
            p.locations
                .sort_by(|a, b| (&a.file, a.start_line).cmp(&(&b.file, b.start_line)));
        }
        all_winnows.sort_by_key(|w| (w.file, w.token));
        let clone_recs = crate::clones::groups(&all_winnows, &self.settings);
        let mut clones: Vec<Vec<(String, u32, u32)>> = Vec::new();
        for g in clone_recs.chunk_by(|a, b| a.group == b.group) {
            clones.push(
                g.iter()
                    .map(|r| {
                        (
                            names.get(r.file as usize).cloned().unwrap_or_default(),
                            r.start_line,
                            r.end_line,
                        )
                    })
                    .collect(),
            );
        }
        let set: HashSet<String> = names.iter().cloned().collect();
        let dependents = crate::deps::dependents(&set, &imports);
        let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, (lang, modules)) in &imports {
            for m in modules {
                for t in crate::deps::resolve(&set, from, *lang, m) {
                    direct.entry(from.clone()).or_default().insert(t);
                }
            }
        }
        let generation = self.merged.read().map_or(0, |m| m.generation) + 1;
        let merged = Merged {
            generation,
            files: names.len(),
            patterns,
            clones,
            imports: direct,
            dependents,
        };
        if let Ok(mut m) = self.merged.write() {
            *m = Arc::new(merged);
        }
    }

    fn view(&self) -> Arc<Merged> {
        self.merged.read().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn push(State(s): S, body: Bytes) -> Response {
    let p: Push = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid push",
                format!("expected {{\"files\": [{{\"path\", \"content\" | \"deleted\"}}]}}: {e}"),
            )
        }
    };
    // Every file is checked before anything is kept or enqueued.
    for f in &p.files {
        if !valid_path(&f.path) {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid push",
                format!(
                    "{:?}: a path relative to the repository, without . or .. parts",
                    f.path
                ),
            );
        }
        if Lang::of_path(Path::new(&f.path)).is_none() {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid push",
                format!("{:?}: not a language periodic reads", f.path),
            );
        }
        if f.content.is_none() != f.deleted {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid push",
                format!("{:?}: give either content or deleted: true", f.path),
            );
        }
    }
    let mut by_shard: BTreeMap<u32, Vec<(String, Option<String>)>> = BTreeMap::new();
    for f in p.files {
        let blob = match &f.content {
            Some(text) => {
                let key = blake3::hash(text.as_bytes()).to_hex().to_string();
                let opts = weir_cache::SetOptions {
                    ttl_ms: Some(86_400_000),
                    ..Default::default()
                };
                if let Err(e) = s
                    .cache
                    .set(
                        NS_BLOBS,
                        &key,
                        Bytes::from(text.clone().into_bytes()),
                        &opts,
                    )
                    .await
                {
                    return problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Cache unavailable",
                        e.to_string(),
                    );
                }
                Some(key)
            }
            None => None,
        };
        by_shard
            .entry(s.ring.shard_of(&f.path))
            .or_default()
            .push((f.path, blob));
    }
    let mut jobs = Vec::new();
    for (shard, files) in by_shard {
        for chunk in files.chunks(s.batch.max(1)) {
            let job = BatchJob {
                shard,
                files: chunk.to_vec(),
            };
            let Ok(payload) = serde_json::value::to_raw_value(&job) else {
                continue;
            };
            let mut new = weir_api::NewJobBody::new(QUEUE, "index", payload);
            new.max_attempts = Some(MAX_ATTEMPTS);
            jobs.push(new);
        }
    }
    let n = jobs.len() as u64;
    s.pending.fetch_add(n, Ordering::SeqCst);
    match s
        .weir
        .enqueue_patiently(jobs, Duration::from_secs(10))
        .await
    {
        Ok(ids) => (StatusCode::ACCEPTED, Json(serde_json::json!({"jobs": ids}))).into_response(),
        Err(e) => {
            s.pending.fetch_sub(n, Ordering::SeqCst);
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Queue unavailable",
                e.to_string(),
            )
        }
    }
}

/// Applies one batch (see [`apply_batch`]); a batch that is done, or that failed for good,
/// is no longer pending (one that will be retried still is).
async fn apply(job: JobContext, s: Arc<Shared>) -> Result<Option<serde_json::Value>, HandlerError> {
    let last_attempt = job.attempt >= MAX_ATTEMPTS;
    let r = apply_batch(&job, &s).await;
    if r.is_ok() || r.as_ref().is_err_and(|e| !e.retry || last_attempt) {
        s.pending.fetch_sub(1, Ordering::SeqCst);
    }
    r
}

/// Files into the shard's folder, the shard's index updated, the view merged, and the
/// cached answers the batch touches invalidated.
async fn apply_batch(
    job: &JobContext,
    s: &Arc<Shared>,
) -> Result<Option<serde_json::Value>, HandlerError> {
    let b: BatchJob = job.payload()?;
    let mut contents = Vec::new();
    for (path, blob) in &b.files {
        let bytes = match blob {
            Some(key) => Some(
                s.cache
                    .get(NS_BLOBS, key)
                    .await
                    .map_err(|e| HandlerError::retry(format!("cache: {e}")))?
                    .ok_or_else(|| {
                        HandlerError::fatal(format!("{path}: its content is gone from the cache"))
                    })?
                    .value,
            ),
            None => None,
        };
        contents.push((path.clone(), bytes));
    }
    let changed: Vec<String> = contents.iter().map(|c| c.0.clone()).collect();
    let shared = s.clone();
    let before = s.view();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let _one = shared.shard_locks[b.shard as usize % shared.shard_locks.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = shared.shard_dir(b.shard);
        for (path, bytes) in contents {
            let target = dir.join(&path);
            match bytes {
                Some(b) => {
                    if let Some(p) = target.parent() {
                        std::fs::create_dir_all(p)?;
                    }
                    std::fs::write(&target, b)?;
                }
                None => {
                    let _ = std::fs::remove_file(&target);
                }
            }
        }
        std::fs::create_dir_all(&dir)?;
        index::update(
            &dir,
            &shared.shard_index(b.shard),
            shared.settings,
            &|_: Progress| {},
        )?;
        shared.merge();
        Ok(())
    })
    .await
    .map_err(|e| HandlerError::retry(e.to_string()))?
    .map_err(|e| HandlerError::retry(format!("shard {}: {e}", b.shard)))?;
    // The whole table's answers are retired; each changed file's answers go, and through
    // their dependencies those of every file importing it, before and after the change.
    let _ = s.cache.bump(NS_TABLE).await;
    let after = s.view();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for c in &changed {
        keys.insert(format!("file:{c}"));
        for d in before
            .dependents
            .get(c)
            .into_iter()
            .chain(after.dependents.get(c))
            .flatten()
        {
            keys.insert(format!("file:{d}"));
        }
    }
    let keys: Vec<String> = keys.into_iter().collect();
    let _ = s.cache.invalidate(NS_FILES, &keys, &[]).await;
    Ok(Some(
        serde_json::json!({"files": changed.len(), "generation": after.generation}),
    ))
}

#[derive(Deserialize)]
struct PatternsQuery {
    kind: Option<String>,
    #[serde(default = "two")]
    min_count: usize,
    #[serde(default = "fifty")]
    limit: usize,
}

fn two() -> usize {
    2
}

fn fifty() -> usize {
    50
}

/// A JSON answer through the cache: `key` in `ns`, made by `make` on a miss, with `deps`.
async fn cached(
    s: &Shared,
    ns: &str,
    key: &str,
    deps: Vec<String>,
    make: impl FnOnce() -> serde_json::Value,
) -> Response {
    if let Ok(Some(hit)) = s.cache.get(ns, key).await {
        return (
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/json".to_string(),
                ),
                (
                    axum::http::HeaderName::from_static("periodic-cache"),
                    format!("hit ({})", hit.tier.name()),
                ),
            ],
            hit.value,
        )
            .into_response();
    }
    let body = make().to_string();
    let opts = weir_cache::SetOptions {
        ttl_ms: Some(3_600_000),
        deps,
        ..Default::default()
    };
    let _ = s.cache.set(ns, key, Bytes::from(body.clone()), &opts).await;
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_string(),
            ),
            (
                axum::http::HeaderName::from_static("periodic-cache"),
                "miss".to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn patterns(State(s): S, Query(q): Query<PatternsQuery>) -> Response {
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => match Kind::named(k) {
            Some(k) => Some(k.name()),
            None => {
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid query",
                    format!(
                        "kind {k:?}: expected one of {}",
                        Kind::ALL.map(Kind::name).join(", ")
                    ),
                )
            }
        },
    };
    let view = s.view();
    let key = format!(
        "patterns:{}:{}:{}",
        kind.unwrap_or(""),
        q.min_count,
        q.limit
    );
    cached(&s, NS_TABLE, &key, Vec::new(), || {
        let rows: Vec<&MergedPattern> = view
            .patterns
            .iter()
            .filter(|p| p.count >= q.min_count && kind.is_none_or(|k| p.kind == k))
            .take(if q.limit == 0 { usize::MAX } else { q.limit })
            .collect();
        serde_json::json!({"generation": view.generation, "files": view.files, "patterns": rows})
    })
    .await
}

#[derive(Deserialize)]
struct ClonesQuery {
    #[serde(default = "five")]
    min_lines: u32,
    #[serde(default = "fifty")]
    limit: usize,
}

fn five() -> u32 {
    5
}

async fn clones(State(s): S, Query(q): Query<ClonesQuery>) -> Response {
    let view = s.view();
    let key = format!("clones:{}:{}", q.min_lines, q.limit);
    cached(&s, NS_TABLE, &key, Vec::new(), || {
        let groups: Vec<Vec<serde_json::Value>> = view
            .clones
            .iter()
            .map(|g| {
                g.iter()
                    .filter(|r| r.2 + 1 - r.1 >= q.min_lines)
                    .map(|r| serde_json::json!({"file": r.0, "start_line": r.1, "end_line": r.2}))
                    .collect::<Vec<_>>()
            })
            .filter(|g| g.len() >= 2)
            .take(if q.limit == 0 { usize::MAX } else { q.limit })
            .collect();
        serde_json::json!({"generation": view.generation, "clones": groups})
    })
    .await
}

#[derive(Deserialize)]
struct MatchBody {
    snippet: String,
    lang: String,
    #[serde(default = "half")]
    min_similarity: f64,
}

fn half() -> f64 {
    0.5
}

async fn match_snippet(State(s): S, Json(b): Json<MatchBody>) -> Response {
    let Some(lang) = Lang::named(&b.lang) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid query",
            format!(
                "lang {:?}: expected rust, python, javascript, typescript, tsx or go",
                b.lang
            ),
        );
    };
    if !(0.0..=1.0).contains(&b.min_similarity) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid query",
            "min_similarity must be between 0 and 1",
        );
    }
    let mut found = Vec::new();
    let mut probe_error = None;
    for shard in 0..s.shards {
        let Ok(idx) = Index::open(&s.shard_index(shard), Check::Quick) else {
            continue;
        };
        match crate::query::probe_snippet(&b.snippet, lang, &idx) {
            Ok(p) => found.extend(crate::query::matches(&idx, &p, b.min_similarity, 0)),
            Err(e) => probe_error = Some(e.to_string()),
        }
    }
    if found.is_empty() {
        if let Some(e) = probe_error {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, "Invalid query", e);
        }
    }
    found.sort_by(|a, b| {
        b.exact
            .cmp(&a.exact)
            .then(b.similarity.total_cmp(&a.similarity))
            .then_with(|| (a.file.as_str(), a.start_line).cmp(&(b.file.as_str(), b.start_line)))
    });
    Json(serde_json::json!({"matches": found})).into_response()
}

async fn file(State(s): S, UrlPath(path): UrlPath<String>) -> Response {
    if !valid_path(&path) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid query",
            format!("{path:?}: not a file path"),
        );
    }
    let view = s.view();
    if !view.imports.contains_key(&path)
        && !view.dependents.contains_key(&path)
        && !view
            .patterns
            .iter()
            .any(|p| p.locations.iter().any(|l| l.file == path))
        && !s.shard_dir(s.ring.shard_of(&path)).join(&path).exists()
    {
        return problem(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("{path} is not in the index"),
        );
    }
    // This answer depends on the answers about the files it imports: when one of them
    // changes, this one goes too.
    let deps: Vec<String> = view
        .imports
        .get(&path)
        .into_iter()
        .flatten()
        .map(|d| format!("file:{d}"))
        .collect();
    let key = format!("file:{path}");
    cached(&s, NS_FILES, &key, deps, || {
        let patterns: Vec<serde_json::Value> = view
            .patterns
            .iter()
            .filter(|p| p.locations.iter().any(|l| l.file == path))
            .map(|p| serde_json::json!({"fingerprint": p.fingerprint, "kind": p.kind, "count": p.count, "size": p.size}))
            .collect();
        let clones: Vec<&Vec<(String, u32, u32)>> =
            view.clones.iter().filter(|g| g.iter().any(|r| r.0 == path)).collect();
        serde_json::json!({
            "file": path,
            "generation": view.generation,
            "shard": s.ring.shard_of(&path),
            "imports": view.imports.get(&path),
            "dependents": view.dependents.get(&path),
            "patterns": patterns,
            "clone_groups": clones.len(),
        })
    })
    .await
}

async fn status(State(s): S) -> Response {
    let view = s.view();
    Json(serde_json::json!({
        "generation": view.generation,
        "files": view.files,
        "patterns": view.patterns.len(),
        "clones": view.clones.len(),
        "pending": s.pending.load(Ordering::SeqCst),
        "shards": s.shards,
    }))
    .into_response()
}

/// Runs until `stop`. Prints `periodic serving on http://ADDR (weir: URL, N shards)` once
/// it listens.
pub async fn run(cfg: ServeConfig, stop: CancellationToken) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.data_dir.display()))?;
    let stopped = stop.clone();
    let (weir_url, embedded) =
        weir_server::embedded::given_or_start(cfg.weir.as_deref(), &cfg.data_dir, async move {
            stopped.cancelled().await
        })
        .await?;
    let weir = Client::new(&weir_url).map_err(|e| e.to_string())?;
    let cache = weir_cache::Cache::open(weir_cache::CacheConfig {
        dir: Some(cfg.data_dir.join("cache")),
        redis_url: cfg.redis.clone(),
        redis_prefix: cfg.redis_prefix.clone(),
        max_value_bytes: 64 << 20,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot open the cache: {e}"))?;
    let shards = cfg.shards.clamp(1, 1024);
    let shared = Arc::new(Shared {
        data: cfg.data_dir.clone(),
        ring: Ring::new(shards),
        shards,
        settings: Settings::default(),
        weir: weir.clone(),
        cache,
        merged: RwLock::new(Arc::new(Merged::default())),
        shard_locks: (0..shards).map(|_| Mutex::new(())).collect(),
        merge_lock: Mutex::new(()),
        pending: AtomicU64::new(0),
        batch: cfg.batch,
    });
    {
        let s = shared.clone();
        tokio::task::spawn_blocking(move || s.merge())
            .await
            .map_err(|e| e.to_string())?;
    }
    let concurrency = Concurrency::Fixed(
        cfg.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
    );
    let worker = {
        let s = shared.clone();
        WorkerBuilder::new(weir.clone(), &[QUEUE])
            .concurrency(concurrency)
            .batch(1)
            .handle("index", move |job| apply(job, s.clone()))
            .build()
    };
    let work = tokio::spawn(worker.run(stop.clone()));
    let app = Router::new()
        .route(
            "/v1/files",
            post(push).layer(axum::extract::DefaultBodyLimit::max(MAX_PUSH_BYTES)),
        )
        .route("/v1/files/{*path}", get(file))
        .route("/v1/patterns", get(patterns))
        .route("/v1/clones", get(clones))
        .route("/v1/match", post(match_snippet))
        .route("/v1/status", get(status))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("periodic serving on http://{addr} (weir: {weir_url}, {shards} shards)");
    let stopped = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped.cancelled().await })
        .await
        .map_err(|e| e.to_string())?;
    let _ = work.await;
    if let Some(e) = embedded {
        let _ = e.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_spreads_files_and_moves_few_when_a_shard_is_added() {
        let four = Ring::new(4);
        let five = Ring::new(5);
        let paths: Vec<String> = (0..10_000)
            .map(|i| format!("src/m{}/f{i}.rs", i % 37))
            .collect();
        let mut per = [0usize; 4];
        for p in &paths {
            per[four.shard_of(p) as usize] += 1;
        }
        assert!(per.iter().all(|&n| n > 1500 && n < 3500), "{per:?}");
        let moved = paths
            .iter()
            .filter(|p| four.shard_of(p) != five.shard_of(p))
            .count();
        assert!(moved < 3000, "about a fifth should move, {moved} did");
        assert!(
            paths.iter().all(|p| {
                let (a, b) = (four.shard_of(p), five.shard_of(p));
                a == b || b == 4
            }),
            "files only move to the new shard"
        );
    }

    #[test]
    fn pushed_paths_must_stay_inside_the_repository() {
        for bad in [
            "",
            "/etc/passwd.rs",
            "../x.rs",
            "a/../../x.rs",
            "a//b.rs",
            "a\\\\b.rs",
            "./a.rs",
        ] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert!(valid_path("src/lib.rs"));
    }
}
