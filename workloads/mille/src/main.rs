//! The `mille` command line: `mille summary PLAN [--json]`, `mille render PLAN --out DIR`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mille: Terraform plan graphs and pull-request summaries.
#[derive(Debug, Parser)]
#[command(name = "mille", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the plan's Markdown summary (or, with --json, its counts).
    Summary {
        /// The plan: `terraform show -json` output, or `-` for stdin.
        plan: PathBuf,
        /// One JSON object: {"resources": N, "counts": {"create": n, ...}}.
        #[arg(long)]
        json: bool,
        /// Compute it even if the cache holds it (and do not keep it).
        #[arg(long)]
        no_cache: bool,
        /// The render cache's folder (default $XDG_CACHE_HOME/mille; env MILLE_CACHE_DIR).
        #[arg(long, env = "MILLE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Write the summary (summary.md) and the graph (graph.svg, graph.html; with --format dot,
    /// graph.dot too) into a folder.
    Render {
        /// The plan: `terraform show -json` output, or `-` for stdin.
        plan: PathBuf,
        /// The folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Also write the graph as Graphviz DOT (`dot`).
        #[arg(long)]
        format: Option<String>,
        /// Draw unchanged (no-op) resources too.
        #[arg(long)]
        include_no_op: bool,
        /// Render even if the cache holds this plan's rendering (and do not keep it).
        #[arg(long)]
        no_cache: bool,
        /// The render cache's folder (default $XDG_CACHE_HOME/mille; env MILLE_CACHE_DIR).
        #[arg(long, env = "MILLE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// The render cache: `stats`, or `prune --max-size 500MiB --max-age 30d`.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// Take PR webhooks and post plan summaries as PR comments, rendered on a Weir worker
    /// pool (an embedded Weir unless --weir).
    Serve(mille::serve::ServeConfig),
    /// Print a synthetic plan (for benchmarks): CHANGES resource changes over MODULES modules.
    #[command(hide = true)]
    Synth {
        changes: usize,
        #[arg(default_value_t = 20)]
        modules: usize,
        /// Bytes of attribute values per change.
        #[arg(long, default_value_t = 2000)]
        bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCmd {
    /// Where the cache is, how many files (one per output of a rendering) it holds and their
    /// size.
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// The cache's folder (default $XDG_CACHE_HOME/mille; env MILLE_CACHE_DIR).
        #[arg(long, env = "MILLE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Remove outputs unused for --max-age, then the least recently used down to --max-size.
    Prune {
        /// Largest size to keep: `500MiB`, `2GiB`, `2GB`, or bytes.
        #[arg(long)]
        max_size: Option<String>,
        /// Remove outputs unused for this long: `30d`, `12h`, ... or ms.
        #[arg(long)]
        max_age: Option<String>,
        /// The cache's folder (default $XDG_CACHE_HOME/mille; env MILLE_CACHE_DIR).
        #[arg(long, env = "MILLE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
}

fn cache_dir(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    given.or_else(mille::cache::default_dir).ok_or_else(|| {
        (
            2,
            "no cache folder: set --cache-dir or MILLE_CACHE_DIR".to_string(),
        )
    })
}

fn open_cache(dir: &std::path::Path) -> Result<mille::cache::RenderCache, Failure> {
    mille::cache::RenderCache::open(dir, mille::cache::DEFAULT_MAX_BYTES)
        .map_err(|e| (1, format!("cache {}: {e}", dir.display())))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad usage");
            eprintln!(
                "mille: {} (see mille --help)",
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
            eprintln!("mille: {msg}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Summary {
            plan,
            json,
            no_cache,
            cache_dir: dir,
        } => {
            // The same cache as `render`: a plan summarised (or rendered) once is answered
            // from its file, without parsing it again.
            let src = mille::source::PlanBytes::open(&plan)
                .map_err(|e| (2, format!("cannot read {}: {e}", plan.display())))?;
            let key = src.key(false);
            let name = if json { "counts.json" } else { "summary.md" };
            let cache_at = if no_cache { None } else { cache_dir(dir).ok() };
            if let Some(hit) = cache_at
                .as_deref()
                .and_then(|d| mille::cache::RenderCache::peek(d, &key, name))
            {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(hit.as_ref());
                return Ok(());
            }
            let p = src
                .parse()
                .map_err(|e| (2, format!("{}: {e}", plan.display())))?;
            let text = if json {
                format!("{}\n", mille::summary::json(&p))
            } else {
                mille::summary::markdown(&p, mille::summary::COMMENT_LIMIT)
            };
            print!("{text}");
            if let Some(c) = cache_at.and_then(|d| open_cache(&d).ok()) {
                let _ = c.put_file(&key, name, text);
            }
            Ok(())
        }
        Command::Serve(cfg) => {
            if cfg.secret.is_empty() {
                return Err((2, "--secret must not be empty".into()));
            }
            if !(cfg.seconds_per_plan.is_finite() && cfg.seconds_per_plan > 0.0) {
                return Err((2, "--seconds-per-plan must be a positive number".into()));
            }
            if cfg.window == 0 {
                return Err((2, "--window must be longer than 0".into()));
            }
            let rt = tokio::runtime::Runtime::new()
                .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
            rt.block_on(async {
                let stop = tokio_util::sync::CancellationToken::new();
                let on_signal = stop.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    on_signal.cancel();
                });
                mille::serve::run(cfg, stop).await.map_err(|e| (1, e))
            })
        }
        Command::Synth {
            changes,
            modules,
            bytes,
        } => {
            println!("{}", mille::synth::plan(changes, modules, bytes));
            Ok(())
        }
        Command::Render {
            plan,
            out,
            format,
            include_no_op,
            no_cache,
            cache_dir: dir,
        } => {
            if let Some(f) = format.as_deref().filter(|f| *f != "dot" && *f != "svg") {
                return Err((2, format!("--format {f:?}: expected dot or svg")));
            }
            // The file is mapped, not read: hashing it for the cache key and parsing it hand
            // its pages back behind them (see mille::source), so neither a hit nor a miss
            // holds the whole plan. Stdin is read whole.
            let src = mille::source::PlanBytes::open(&plan)
                .map_err(|e| (2, format!("cannot read {}: {e}", plan.display())))?;
            // A cache that cannot be opened (a read-only home) only costs the speed-up.
            let cache_at = if no_cache { None } else { cache_dir(dir).ok() };
            let key = src.key(include_no_op);
            std::fs::create_dir_all(&out)
                .map_err(|e| (1, format!("cannot create {}: {e}", out.display())))?;
            let write = |name: &str, text: &[u8]| {
                std::fs::write(out.join(name), text)
                    .map_err(|e| (1, format!("cannot write {}: {e}", out.join(name).display())))
            };
            let mut files = vec!["graph.svg", "graph.html", "summary.md"];
            if format.as_deref() == Some("dot") {
                files.push("graph.dot");
            }
            // A hit: every output this render needs is in the cache, read by name without
            // opening (and indexing) the whole cache.
            if let Some(d) = &cache_at {
                let hits: Option<Vec<_>> = files
                    .iter()
                    .map(|f| mille::cache::RenderCache::peek(d, &key, f))
                    .collect();
                if let Some(hits) = hits {
                    for (f, h) in files.iter().zip(hits) {
                        write(f, h.as_ref())?;
                    }
                    return Ok(());
                }
            }
            let cache = cache_at.and_then(|d| open_cache(&d).ok());
            let p = src
                .parse()
                .map_err(|e| (2, format!("{}: {e}", plan.display())))?;
            // The plan's text is not needed past parsing: give it back.
            drop(src);
            // Each output is written (and cached) as soon as it is made, then dropped, and
            // the plan goes as soon as the graph and the summary are made from it: the peak
            // memory is the graph and the largest output, not everything at once. One layout
            // serves graph.svg and graph.html.
            let keep = |f: &str, text: String| -> Result<(), Failure> {
                write(f, text.as_bytes())?;
                if let Some(c) = &cache {
                    if let Err(e) = c.put_file(&key, f, text) {
                        eprintln!("mille: could not keep {f} in the cache: {e}");
                    }
                }
                Ok(())
            };
            keep(
                "summary.md",
                mille::summary::markdown(&p, mille::summary::COMMENT_LIMIT),
            )?;
            let title = format!("plan — {} changes", p.changes.len());
            let g = mille::Graph::from_plan(p);
            let layout = mille::layout::Layout::of(&g, include_no_op);
            keep("graph.svg", mille::svg::render(&g, &layout))?;
            keep(
                "graph.html",
                mille::html::page_with(&g, &layout, include_no_op, &title),
            )?;
            drop(layout);
            if files.contains(&"graph.dot") {
                keep("graph.dot", mille::dot::render(&g, include_no_op))?;
            }
            Ok(())
        }
        Command::Cache(CacheCmd::Stats {
            json,
            cache_dir: dir,
        }) => {
            let dir = cache_dir(dir)?;
            let c = open_cache(&dir)?;
            let (files, bytes) = c.usage();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"dir": dir, "files": files, "bytes": bytes,
                        "renderer_version": mille::cache::RENDERER_VERSION})
                );
            } else {
                println!(
                    "{}: {files} files, {:.1} MiB (renderer version {})",
                    dir.display(),
                    bytes as f64 / (1 << 20) as f64,
                    mille::cache::RENDERER_VERSION
                );
            }
            Ok(())
        }
        Command::Cache(CacheCmd::Prune {
            max_size,
            max_age,
            cache_dir: dir,
        }) => {
            let max_bytes = max_size
                .as_deref()
                .map(weir_core::units::parse_size)
                .transpose()
                .map_err(|e| (2, format!("--max-size: {e}")))?;
            let older = max_age
                .as_deref()
                .map(weir_core::units::parse_duration_ms)
                .transpose()
                .map_err(|e| (2, format!("--max-age: {e}")))?;
            if max_bytes.is_none() && older.is_none() {
                return Err((2, "prune needs --max-size or --max-age".into()));
            }
            let dir = cache_dir(dir)?;
            let r = open_cache(&dir)?.prune(max_bytes, older);
            println!(
                "removed {} files ({} bytes); {} left ({} bytes)",
                r.files, r.bytes, r.files_left, r.bytes_left
            );
            Ok(())
        }
    }
}
