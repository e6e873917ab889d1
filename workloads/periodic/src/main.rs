//! The `periodic` command line: `index DIR`, `patterns`, `clones`.

use clap::{Parser, Subcommand};
use periodic::index::{self, Progress};
use periodic::store::Index;
use periodic::{Kind, Lang, Settings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// periodic: the recurring structural patterns of a codebase, and its clones.
#[derive(Debug, Parser)]
#[command(name = "periodic", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build or update the index of DIR (only new and changed files are parsed).
    Index {
        /// The folder to index.
        dir: PathBuf,
        /// The index file (default DIR/.periodic/index).
        #[arg(long)]
        index: Option<PathBuf>,
        /// One JSON object: files, parsed, patterns, clones, seconds.
        #[arg(long)]
        json: bool,
        /// Smallest subtree kept, nodes.
        #[arg(long, default_value_t = Settings::default().min_nodes)]
        min_nodes: u32,
    },
    /// The periodic table: recurring patterns, biggest first.
    Patterns {
        /// The index file, or the folder it indexes (default: the current folder).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Only this kind: function, type, control, call, block, binding, import,
        /// expression, other.
        #[arg(long)]
        kind: Option<String>,
        /// Only patterns seen at least this often.
        #[arg(long, default_value_t = 2)]
        min_count: u32,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines, with every location.
        #[arg(long)]
        json: bool,
    },
    /// The code structurally like FILE:LINE, or like --snippet TEXT --lang L.
    Match {
        /// FILE:LINE (a file of the indexed folder, or any file).
        place: Option<String>,
        /// The code to match, instead of a place.
        #[arg(long, conflicts_with = "place")]
        snippet: Option<String>,
        /// The snippet's language: rust, python, javascript, typescript, tsx, go.
        #[arg(long, requires = "snippet")]
        lang: Option<String>,
        /// The index file, or the folder it indexes (default: the current folder).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Also places sharing at least this share of the probe's token hashes (0 to 1).
        #[arg(long, default_value_t = 0.5)]
        min_similarity: f64,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve a team's index: files pushed by `periodic push`, indexed on a Weir worker pool
    /// into sharded indexes, queried over HTTP.
    Serve(periodic::serve::ServeConfig),
    /// Send DIR's new, changed and deleted files to a `periodic serve`.
    Push {
        /// The folder (the repository root).
        dir: PathBuf,
        /// The server.
        #[arg(long, default_value = "http://127.0.0.1:7480")]
        server: String,
        /// Files per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Wait until the server has indexed everything pushed.
        #[arg(long)]
        wait: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Keep DIR's index current as files change, printing what each edit changed.
    Watch {
        /// The folder to watch.
        dir: PathBuf,
        /// The index file (default DIR/.periodic/index).
        #[arg(long)]
        index: Option<PathBuf>,
        /// One JSON object per line: `{"watching": DIR}`, then one per change.
        #[arg(long)]
        json: bool,
    },
    /// Read and parse every source file of DIR on every core and keep nothing: what
    /// tree-sitter alone costs here, the ceiling of `index`'s cold rate (benchmarks).
    #[command(hide = true)]
    Ceiling {
        /// The folder.
        dir: PathBuf,
        /// Also step through every node of each tree.
        #[arg(long)]
        visit: bool,
    },
    /// Clone groups: places that are copies of each other (names and constants aside).
    Clones {
        /// The index file, or the folder it indexes (default: the current folder).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Only regions of at least this many lines.
        #[arg(long, default_value_t = 5)]
        min_lines: u32,
        /// At most this many groups (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
}

type Failure = (u8, String);

// Parsing allocates and frees tree nodes at a high rate: mimalloc serves both Rust and the
// tree-sitter C library (see use_mimalloc_for_parsers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Points tree-sitter's C allocations at mimalloc too (measured: the parse phase of the
/// benchmark corpus spent a tenth of its time in glibc's malloc and free).
#[allow(unsafe_code)]
fn use_mimalloc_for_parsers() {
    // SAFETY: called once, first thing in main, before any parser or tree exists, so no
    // allocation is ever freed by an allocator that did not make it; the four functions
    // have the signatures ts_set_allocator expects.
    unsafe {
        tree_sitter::set_allocator(
            Some(libmimalloc_sys::mi_malloc),
            Some(libmimalloc_sys::mi_calloc),
            Some(libmimalloc_sys::mi_realloc),
            Some(libmimalloc_sys::mi_free),
        );
    }
}

fn main() -> ExitCode {
    use_mimalloc_for_parsers();
    // `periodic patterns | head` ends quietly, as other Unix tools do.
    sigpipe::reset();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad usage");
            eprintln!(
                "periodic: {} (see periodic --help)",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("periodic: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The index file named by `--index` (a file, or a folder holding `.periodic/index`).
fn index_file(given: Option<PathBuf>) -> PathBuf {
    let p = given.unwrap_or_else(|| PathBuf::from("."));
    if p.is_dir() {
        index::default_path(&p)
    } else {
        p
    }
}

fn open(given: Option<PathBuf>) -> Result<Index, Failure> {
    let path = index_file(given);
    Index::open(&path, periodic::store::Check::Quick).map_err(|e| match e {
        periodic::store::OpenError::Missing(p) => (
            2,
            format!(
                "no index at {} (run `periodic index DIR` first)",
                p.display()
            ),
        ),
        e => (
            1,
            format!("{e} (run `periodic index DIR` again to rebuild it)"),
        ),
    })
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Ceiling { dir, visit } => {
            if !dir.is_dir() {
                return Err((2, format!("{} is not a folder", dir.display())));
            }
            let c = index::ceiling(&dir, visit);
            println!("{}", serde_json::to_string(&c).unwrap_or_default());
            Ok(())
        }
        Command::Index {
            dir,
            index,
            json,
            min_nodes,
        } => {
            if !dir.is_dir() {
                return Err((2, format!("{} is not a folder", dir.display())));
            }
            let path = index.unwrap_or_else(|| index::default_path(&dir));
            let settings = Settings {
                min_nodes: min_nodes.max(2),
                ..Settings::default()
            };
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} parsing {pos}/{len} files {wide_bar} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = index::update(&dir, &path, settings, &|p| match p {
                Progress::Start(n) => bar.set_length(n as u64),
                Progress::Step => bar.inc(1),
            })
            .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))?;
            bar.finish_and_clear();
            if let Some(why) = &report.rebuilt_because {
                eprintln!("periodic: rebuilt the index: {why}");
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
                );
            } else {
                println!(
                    "{} files ({} parsed) · {} patterns · {} clone groups · {:.2} s → {}",
                    report.files,
                    report.parsed,
                    report.patterns,
                    report.clones,
                    report.seconds,
                    path.display()
                );
            }
            Ok(())
        }
        Command::Patterns {
            index,
            kind,
            min_count,
            limit,
            json,
        } => {
            let kind = match kind.as_deref() {
                None => None,
                Some(k) => Some(Kind::named(k).ok_or_else(|| {
                    (
                        2,
                        format!(
                            "--kind {k:?}: expected one of {}",
                            Kind::ALL.map(Kind::name).join(", ")
                        ),
                    )
                })?),
            };
            let idx = open(index)?;
            let mut rows: Vec<_> = idx
                .patterns()
                .iter()
                .filter(|p| p.subsumed == 0 && p.count >= min_count)
                .filter(|p| kind.is_none_or(|k| p.kind == k.id()))
                .collect();
            rows.sort_by(|a, b| (b.size, b.count, a.fp).cmp(&(a.size, a.count, b.fp)));
            if limit > 0 {
                rows.truncate(limit);
            }
            let files = idx.files();
            let place = |s: &periodic::fingerprint::Subtree| {
                let f = &files[s.file as usize];
                (idx.path_of(f).to_string(), s.start_line, s.end_line, f.lang)
            };
            if !json {
                println!(
                    "{:>6} {:>6} {:>6} {:>6}  {:<10}  first seen",
                    "nodes", "count", "files", "lines", "kind"
                );
            }
            for p in rows {
                let places: Vec<_> = idx.occurrences_of(p).map(place).collect();
                if json {
                    let locations: Vec<_> = places
                        .iter()
                        .map(|(path, s, e, _)| serde_json::json!({"file": path, "start_line": s, "end_line": e}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "fingerprint": format!("{:016x}", p.fp),
                            "kind": Kind::from_id(p.kind).name(),
                            "language": places.first().and_then(|x| Lang::from_id(x.3)).map(Lang::name),
                            "size": p.size, "count": p.count, "files": p.files, "lines": p.lines,
                            "locations": locations,
                        })
                    );
                } else if let Some((path, s, e, _)) = places.first() {
                    println!(
                        "{:>6} {:>6} {:>6} {:>6}  {:<10}  {path}:{s}-{e}",
                        p.size,
                        p.count,
                        p.files,
                        p.lines,
                        Kind::from_id(p.kind).name()
                    );
                }
            }
            Ok(())
        }
        Command::Match {
            place,
            snippet,
            lang,
            index,
            min_similarity,
            limit,
            json,
        } => {
            if !(0.0..=1.0).contains(&min_similarity) {
                return Err((2, "--min-similarity must be between 0 and 1".into()));
            }
            let t0 = std::time::Instant::now();
            let idx = open(index)?;
            let probe = match (place, snippet) {
                (Some(place), None) => {
                    let (file, line) = place
                        .rsplit_once(':')
                        .and_then(|(f, l)| Some((f, l.parse::<u32>().ok()?)))
                        .ok_or_else(|| (2, format!("{place:?}: expected FILE:LINE")))?;
                    let mut path = PathBuf::from(file);
                    if !path.exists() {
                        path = Path::new(idx.root()).join(file);
                    }
                    periodic::query::probe_file(&path, line, &idx)
                }
                (None, Some(text)) => {
                    let name = lang.ok_or_else(|| (2, "--snippet needs --lang".to_string()))?;
                    let l = Lang::named(&name).ok_or_else(|| {
                        (2, format!("--lang {name:?}: expected rust, python, javascript, typescript, tsx or go"))
                    })?;
                    periodic::query::probe_snippet(&text, l, &idx)
                }
                _ => return Err((2, "give FILE:LINE or --snippet TEXT --lang L".into())),
            }
            .map_err(|e| (2, e.to_string()))?;
            let found = periodic::query::matches(&idx, &probe, min_similarity, limit);
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "probe": {"kind": periodic::query::kind_of(&probe), "size": probe.subtree.size,
                                  "lines": probe.subtree.end_line + 1 - probe.subtree.start_line,
                                  "language": probe.lang.name()},
                        "matches": found, "ms": ms,
                    })
                );
            } else {
                println!(
                    "{} of {} nodes ({} lines): {} places ({ms:.1} ms)",
                    periodic::query::kind_of(&probe),
                    probe.subtree.size,
                    probe.subtree.end_line + 1 - probe.subtree.start_line,
                    found.len()
                );
                for f in found {
                    println!(
                        "  {}:{}-{}  {}",
                        f.file,
                        f.start_line,
                        f.end_line,
                        if f.exact {
                            "same shape".to_string()
                        } else {
                            format!("{:.0} % of its tokens", f.similarity * 100.0)
                        }
                    );
                }
            }
            Ok(())
        }
        Command::Serve(cfg) => {
            let rt = tokio::runtime::Runtime::new()
                .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
            rt.block_on(async {
                let stop = tokio_util::sync::CancellationToken::new();
                let on_signal = stop.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    on_signal.cancel();
                });
                periodic::serve::run(cfg, stop).await.map_err(|e| (1, e))
            })
        }
        Command::Push {
            dir,
            server,
            batch,
            wait,
            json,
        } => {
            if !dir.is_dir() {
                return Err((2, format!("{} is not a folder", dir.display())));
            }
            let rt = tokio::runtime::Runtime::new()
                .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
            let r = rt
                .block_on(periodic::push::push(&dir, &server, batch.max(1), wait))
                .map_err(|e| (1, e))?;
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "{} files: {} sent, {} deleted, {} unchanged{}",
                    r.files,
                    r.sent,
                    r.deleted,
                    r.unchanged,
                    if wait { " — indexed" } else { "" }
                );
            }
            Ok(())
        }
        Command::Watch { dir, index, json } => {
            if !dir.is_dir() {
                return Err((2, format!("{} is not a folder", dir.display())));
            }
            let path = index.unwrap_or_else(|| index::default_path(&dir));
            let mut report = |e: periodic::watch::Event| {
                use periodic::watch::Event;
                use std::io::Write as _;
                let line = match (e, json) {
                    (Event::Watching, true) => serde_json::json!({"watching": dir}).to_string(),
                    (Event::Watching, false) => {
                        format!("watching {} (Ctrl-C to stop)", dir.display())
                    }
                    (Event::Written { ms }, true) => {
                        serde_json::json!({"written": path, "ms": ms}).to_string()
                    }
                    (Event::Written { ms }, false) => {
                        format!("index written ({ms:.0} ms)")
                    }
                    (Event::Change(c), true) => serde_json::to_string(c).unwrap_or_default(),
                    (Event::Change(c), false) => format!(
                        "{} {} in {:.1} ms: patterns +{} -{} ~{} (now {}), shares code with {} files, {} dependents{}",
                        c.file,
                        c.what,
                        c.ms,
                        c.patterns_added,
                        c.patterns_removed,
                        c.patterns_changed,
                        c.patterns,
                        c.clones_with.len(),
                        c.dependents.len(),
                        if c.dependents.is_empty() { String::new() } else { format!(" ({})", c.dependents.join(", ")) }
                    ),
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            };
            periodic::watch::run(
                &dir,
                &path,
                Settings::default(),
                std::time::Duration::from_secs(1),
                &mut report,
                &|| false,
            )
            .map_err(|e| (1, e))
        }
        Command::Clones {
            index,
            min_lines,
            limit,
            json,
        } => {
            let idx = open(index)?;
            let files = idx.files();
            let mut shown = 0;
            for group in idx.clones().chunk_by(|a, b| a.group == b.group) {
                let regions: Vec<_> = group
                    .iter()
                    .filter(|r| r.end_line + 1 - r.start_line >= min_lines)
                    .collect();
                if regions.len() < 2 {
                    continue;
                }
                if limit > 0 && shown == limit {
                    break;
                }
                shown += 1;
                let path = |r: &periodic::store::CloneRec| {
                    idx.path_of(&files[r.file as usize]).to_string()
                };
                if json {
                    let places: Vec<_> = regions
                        .iter()
                        .map(|r| serde_json::json!({"file": path(r), "start_line": r.start_line, "end_line": r.end_line}))
                        .collect();
                    println!("{}", serde_json::json!({"group": shown, "regions": places}));
                } else {
                    let lines = regions
                        .iter()
                        .map(|r| r.end_line + 1 - r.start_line)
                        .max()
                        .unwrap_or(0);
                    println!(
                        "clone group {shown}: {} copies, {lines} lines",
                        regions.len()
                    );
                    for r in regions {
                        println!("  {}:{}-{}", path(r), r.start_line, r.end_line);
                    }
                }
            }
            if shown == 0 && !json {
                println!("no clones of {min_lines} lines or more");
            }
            let _ = Path::new(idx.root());
            Ok(())
        }
    }
}
