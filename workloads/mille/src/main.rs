//! The `mille` command line: `mille summary PLAN [--json]`, `mille render PLAN --out DIR`.

use clap::{Parser, Subcommand};
use std::io::Read;
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
    },
    /// Take PR webhooks and post plan summaries as PR comments, rendered on a Weir worker
    /// pool (an embedded Weir unless --weir).
    Serve {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7470")]
        listen: String,
        /// Where the embedded Weir and the cache keep their files.
        #[arg(long, default_value = "mille-data")]
        data_dir: PathBuf,
        /// The webhook secret (env MILLE_WEBHOOK_SECRET).
        #[arg(long, env = "MILLE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// GitHub's API base URL.
        #[arg(long, default_value = "https://api.github.com")]
        github_api: String,
        /// Token for posting comments (env MILLE_GITHUB_TOKEN).
        #[arg(long, env = "MILLE_GITHUB_TOKEN", hide_env_values = true)]
        github_token: Option<String>,
        /// A Weir server to use instead of the embedded one.
        #[arg(long)]
        weir: Option<String>,
        /// Redis for a cache tier shared by several mille servers.
        #[arg(long)]
        redis: Option<String>,
        /// Render workers (default: one per core, capped by memory at 64 MiB a render).
        #[arg(long)]
        workers: Option<usize>,
        /// How long the circuit breaker leaves a failing GitHub alone, ms.
        #[arg(long, default_value_t = 30_000)]
        breaker_cooldown_ms: u64,
    },
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

fn read_plan(path: &std::path::Path) -> Result<mille::Plan, Failure> {
    let bytes = if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| (1, format!("cannot read stdin: {e}")))?;
        b
    } else {
        std::fs::read(path).map_err(|e| (2, format!("cannot read {}: {e}", path.display())))?
    };
    mille::Plan::parse(&bytes).map_err(|e| (2, format!("{}: {e}", path.display())))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Summary { plan, json } => {
            let p = read_plan(&plan)?;
            if json {
                println!("{}", mille::summary::json(&p));
            } else {
                print!(
                    "{}",
                    mille::summary::markdown(&p, mille::summary::COMMENT_LIMIT)
                );
            }
            Ok(())
        }
        Command::Serve {
            listen,
            data_dir,
            secret,
            github_api,
            github_token,
            weir,
            redis,
            workers,
            breaker_cooldown_ms,
        } => {
            if secret.is_empty() {
                return Err((2, "--secret must not be empty".into()));
            }
            let cfg = mille::serve::ServeConfig {
                listen,
                data_dir,
                secret,
                github_api,
                github_token,
                weir,
                redis,
                workers,
                breaker_cooldown_ms,
            };
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
        } => {
            if let Some(f) = format.as_deref().filter(|f| *f != "dot" && *f != "svg") {
                return Err((2, format!("--format {f:?}: expected dot or svg")));
            }
            let p = read_plan(&plan)?;
            std::fs::create_dir_all(&out)
                .map_err(|e| (1, format!("cannot create {}: {e}", out.display())))?;
            let g = mille::Graph::of(&p);
            let write = |name: &str, text: String| {
                std::fs::write(out.join(name), text)
                    .map_err(|e| (1, format!("cannot write {}: {e}", out.join(name).display())))
            };
            let layout = mille::layout::Layout::of(&g, include_no_op);
            write("graph.svg", mille::svg::render(&g, &layout))?;
            let title = format!(
                "{} — {} changes",
                plan.file_name()
                    .map_or("plan".into(), |n| n.to_string_lossy()),
                p.changes.len()
            );
            write("graph.html", mille::html::page(&g, include_no_op, &title))?;
            if format.as_deref() == Some("dot") {
                write("graph.dot", mille::dot::render(&g, include_no_op))?;
            }
            write(
                "summary.md",
                mille::summary::markdown(&p, mille::summary::COMMENT_LIMIT),
            )?;
            Ok(())
        }
    }
}
