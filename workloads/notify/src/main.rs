//! The `weir-notify` command line: `serve` (the API and the worker pools, on an embedded Weir
//! or a Weir server), `redrive` (the dead-letter queue), `check` (a config file), `stub`
//! (local stand-in providers).

use clap::{Parser, Subcommand};
use notify::api::{self, Api};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir-notify: notification workflows (email, SMS, push, chat) on Weir.
#[derive(Debug, Parser)]
#[command(name = "weir-notify", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and run the pipeline's workers.
    Serve {
        /// The config file (providers, workflows, settings).
        #[arg(long, short, env = "NOTIFY_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:7430).
        #[arg(long, env = "NOTIFY_LISTEN")]
        listen: Option<String>,
        /// Data folder (default ./weir-notify-data).
        #[arg(long, env = "NOTIFY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A Weir server's URL (default: an embedded Weir in the data folder).
        #[arg(long, env = "NOTIFY_WEIR")]
        weir: Option<String>,
        /// Serve the API only; workers run elsewhere.
        #[arg(long)]
        no_workers: bool,
    },
    /// Send the dead-letter queue's deliveries again.
    Redrive {
        /// The weir-notify server.
        #[arg(long, default_value = "http://127.0.0.1:7430", env = "NOTIFY_URL")]
        url: String,
        /// Only this provider's.
        #[arg(long)]
        provider: Option<String>,
        /// The environment variable holding the API token.
        #[arg(long, default_value = "NOTIFY_TOKEN")]
        token_env: String,
    },
    /// Check a config file: providers, workflows, templates.
    Check {
        /// The file.
        config: PathBuf,
    },
    /// Read archived messages (gzip NDJSON, one file per day).
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Measure the pipeline: a bulk send to a topic through stub providers, with
    /// transactional probes during it.
    Bench {
        /// Subscribers in the topic.
        #[arg(long, default_value_t = 100_000)]
        subscribers: usize,
        /// The bulk provider: sendgrid (batches of 1,000) or twilio (one message per call).
        #[arg(long, default_value = "sendgrid", value_parser = ["sendgrid", "twilio"])]
        provider: String,
        /// Deliveries per send job.
        #[arg(long, default_value_t = 1_000)]
        send_batch: usize,
        /// Messages per run job.
        #[arg(long, default_value_t = 1_000)]
        run_batch: usize,
        /// A transactional probe every this many ms (0: none).
        #[arg(long, default_value_t = 100)]
        probe_ms: u64,
        /// Keep the data here (default: a temporary folder, removed after).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only make the subscribers and report memory and disk for them.
        #[arg(long)]
        setup_only: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run local stand-in providers (HTTP: SendGrid, Twilio, FCM, Slack; and SMTP).
    Stub {
        /// HTTP address.
        #[arg(long, default_value = "127.0.0.1:7431")]
        http: SocketAddr,
        /// SMTP address.
        #[arg(long, default_value = "127.0.0.1:7432")]
        smtp: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Print an archive file's messages, one JSON object a line (or a summary line each).
    Read {
        /// The file (`DATA_DIR/archive/YYYY-MM-DD.ndjson.gz`).
        file: PathBuf,
        /// One line per message: id, workflow, subscriber, status, events.
        #[arg(long)]
        summary: bool,
    },
}

fn main() -> ExitCode {
    sigpipe::reset();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("bad arguments");
            eprintln!("weir-notify: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NOTIFY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir-notify: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("weir-notify: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("weir-notify: {m}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Bad input: exit 2.
    Usage(String),
    /// Something failed: exit 1.
    Run(String),
}

async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Serve {
            config,
            listen,
            data_dir,
            weir,
            no_workers,
        } => {
            let file = match &config {
                Some(p) => notify::config::read(p).map_err(Failure::Usage)?,
                None => Default::default(),
            };
            serve(file, listen, data_dir, weir, !no_workers).await
        }
        Command::Redrive {
            url,
            provider,
            token_env,
        } => {
            let client = reqwest::Client::new();
            let mut req = client
                .post(format!("{}/v1/redrive", url.trim_end_matches('/')))
                .json(&serde_json::json!({"provider": provider}));
            if let Ok(t) = std::env::var(&token_env) {
                req = req.bearer_auth(t);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Failure::Run(format!("cannot reach {url}: {e}")))?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if !status.is_success() {
                let detail = body["detail"].as_str().unwrap_or("refused");
                return Err(if status.is_client_error() {
                    Failure::Usage(detail.to_string())
                } else {
                    Failure::Run(detail.to_string())
                });
            }
            println!(
                "redriven: {} deliveries from the dead-letter queue ({} jobs Weir had given up on)",
                body["redriven_deliveries"].as_u64().unwrap_or(0),
                body["redriven_jobs"].as_u64().unwrap_or(0)
            );
            Ok(())
        }
        Command::Check { config } => {
            let file = notify::config::read(&config).map_err(Failure::Usage)?;
            file.pipeline
                .settings()
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let reg = notify::registry(&file.workflows, Vec::new())
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let providers = notify::providers::Providers::new(file.providers)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            println!(
                "ok: {} workflows, {} providers",
                reg.workflows.len(),
                providers.all().len()
            );
            Ok(())
        }
        Command::Archive {
            command: ArchiveCommand::Read { file, summary },
        } => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = notify::store::read_archive(&file, |v| {
                if summary {
                    let m = &v["message"];
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{} events",
                        m["id"].as_str().unwrap_or(""),
                        m["workflow"].as_str().unwrap_or(""),
                        m["subscriber"].as_str().unwrap_or(""),
                        m["status"].as_str().unwrap_or(""),
                        v["activity"].as_array().map(Vec::len).unwrap_or(0)
                    )
                } else {
                    writeln!(out, "{v}")
                }
            });
            match n {
                Ok(_) => out.flush().map_err(|e| Failure::Run(e.to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Failure::Usage(format!("{}: no such file", file.display())))
                }
                Err(e) => Err(Failure::Usage(format!(
                    "{}: not an archive ({e})",
                    file.display()
                ))),
            }
        }
        Command::Bench {
            subscribers,
            provider,
            send_batch,
            run_batch,
            probe_ms,
            data_dir,
            setup_only,
            json,
        } => {
            if !(1..=5_000).contains(&send_batch) || !(1..=5_000).contains(&run_batch) {
                return Err(Failure::Usage("batches: from 1 to 5000".into()));
            }
            let r = notify::bench::run(notify::bench::BenchOptions {
                subscribers,
                provider,
                send_batch,
                run_batch,
                probe_ms,
                data_dir,
                setup_only,
            })
            .await
            .map_err(Failure::Run)?;
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else if setup_only {
                println!(
                    "{} subscribers in {:.1} s: {:.0} MiB resident ({:.0} MiB peak), {:.0} MiB on disk",
                    r.subscribers, r.setup_seconds, r.rss_mib, r.peak_rss_mib, r.store_mib
                );
            } else {
                println!(
                    "{} messages via {} in {:.2} s: {:.0} messages/s ({} provider calls); \
                     password resets during it: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes); \
                     {:.0} MiB resident ({:.0} MiB peak, stub providers included)",
                    r.subscribers, r.provider, r.seconds, r.messages_per_second, r.provider_calls,
                    r.probe_p50_ms, r.probe_p99_ms, r.probe_max_ms, r.probes, r.rss_mib, r.peak_rss_mib
                );
            }
            Ok(())
        }
        Command::Stub { http, smtp } => {
            let l = tokio::net::TcpListener::bind(http)
                .await
                .map_err(|e| Failure::Run(format!("cannot listen on {http}: {e}")))?;
            let h = notify::stub::http(l).map_err(|e| Failure::Run(e.to_string()))?;
            let l = tokio::net::TcpListener::bind(smtp)
                .await
                .map_err(|e| Failure::Run(format!("cannot listen on {smtp}: {e}")))?;
            let s = notify::stub::smtp(l).map_err(|e| Failure::Run(e.to_string()))?;
            println!(
                "stub providers: HTTP {} (faults: PUT /_stub/fault), SMTP {}",
                h.url, s.url
            );
            let _ = tokio::signal::ctrl_c().await;
            Ok(())
        }
    }
}

async fn serve(
    file: notify::config::FileConfig,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    weir: Option<String>,
    workers: bool,
) -> Result<(), Failure> {
    let listen = listen
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:7430".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| Failure::Usage(format!("listen: {listen:?} is not HOST:PORT")))?;
    let token = match &file.token_env {
        Some(env) => Some(std::env::var(env).map_err(|_| {
            Failure::Usage(format!(
                "token_env: the environment variable {env} is not set"
            ))
        })?),
        None => None,
    };
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(Failure::Usage(format!(
            "listen: {addr} is not a loopback address; set token_env to require a token"
        )));
    }
    let settings = file
        .pipeline
        .settings()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let data_dir = data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("weir-notify-data"));
    let opts = notify::Options {
        archive_dir: file
            .archive_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("archive")),
        retention_ms: file
            .retention
            .map(|m| m.0)
            .unwrap_or(notify::DEFAULT_RETENTION_MS),
        data_dir,
        weir: weir.or(file.weir.clone()),
        providers: file.providers,
        workflows: file.workflows,
        settings,
        run_concurrency: file.run_concurrency.unwrap_or(cores * 2),
        send_concurrency: file.send_concurrency.unwrap_or(64),
        workers,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Run(format!("cannot listen on {addr}: {e}")))?;
    let running = notify::start(opts, shutdown.clone())
        .await
        .map_err(Failure::Usage)?;
    let app = api::app(Api {
        notify: running.notify.clone(),
        token: token.map(Arc::from),
        max_body: 4 << 20,
    });
    tracing::info!(%addr, "weir-notify serving");
    eprintln!("weir-notify: serving on http://{addr}");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    #[cfg(unix)]
    {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
                stop.cancel();
            }
        });
    }
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    for w in running.workers {
        let _ = w.await;
    }
    let _ = running.stats_task.await;
    let _ = running.retention_task.await;
    if let Some(t) = running.weir_task {
        let _ = t.await;
    }
    Ok(())
}
