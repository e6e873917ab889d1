//! The command line as typed: raw flags, parsed by clap. Commands turn these into settings.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Weir: durable job queues, flow control and caching in one binary.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every client command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:7420"
    )]
    pub server: String,
    /// Bearer token.
    #[arg(long, global = true, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Machine-readable output (one JSON document).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (embedded storage by default, no other service needed; or PostgreSQL).
    Serve(ServeArgs),
    /// Enqueue one job, or many from an NDJSON file or stdin.
    Push(PushArgs),
    /// List, show, retry, cancel and delete jobs.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// List, show, configure, pause, resume, purge and delete queues.
    #[command(subcommand)]
    Queues(QueuesCmd),
    /// Read, write and invalidate the tiered cache; prune its disk folder.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// List, set and remove cron entries (jobs enqueued on a schedule).
    #[command(subcommand)]
    Cron(CronCmd),
    /// A live table of every queue.
    Stats(StatsArgs),
    /// Drive a running server end to end and report throughput and latency.
    Bench(BenchArgs),
    /// Create or upgrade the PostgreSQL schema, then exit (servers also do it on start).
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// postgres://USER@HOST:PORT/DB (env WEIR_STORE).
    #[arg(long, env = "WEIR_STORE")]
    pub store: String,
    /// The schema (default weir; env WEIR_STORE_SCHEMA).
    #[arg(long, env = "WEIR_STORE_SCHEMA", default_value = "weir")]
    pub store_schema: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address (default 127.0.0.1:7420; env WEIR_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (default ./weir-data; env WEIR_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where jobs live: `embedded` (default) or postgres://USER@HOST:PORT/DB, shared by
    /// several servers (env WEIR_STORE).
    #[arg(long)]
    pub store: Option<String>,
    /// PostgreSQL schema for this deployment's tables (default weir; env WEIR_STORE_SCHEMA).
    #[arg(long)]
    pub store_schema: Option<String>,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// fsync (default) or os: see the README's durability note (env WEIR_DURABILITY).
    #[arg(long)]
    pub durability: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Queue (for one job).
    pub queue: Option<String>,
    /// Kind (for one job).
    pub kind: Option<String>,
    /// Payload as JSON (for one job; default `{}`).
    pub payload: Option<String>,
    /// Read jobs from this NDJSON file (`-` for stdin): one job object per line, as
    /// `POST /v1/jobs` takes them.
    #[arg(long, short, conflicts_with_all = ["queue", "kind", "payload"])]
    pub file: Option<PathBuf>,
    /// Jobs per request when reading a file.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Priority (higher first).
    #[arg(long)]
    pub priority: Option<i32>,
    /// Delay before the job may run: `30s`, `5m`, `2h`, `1d`, or ms.
    #[arg(long, value_name = "DURATION")]
    pub delay: Option<String>,
    /// Delay before the job may run, ms (the same as --delay with a plain number).
    #[arg(long, hide = true, conflicts_with = "delay")]
    pub delay_ms: Option<u64>,
    /// How long to keep retrying while a queue is full (at its max_depth): `30s`, `5m`,
    /// or ms; 0 gives up at the first refusal.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub timeout: String,
    /// Ordered group.
    #[arg(long)]
    pub group: Option<String>,
    /// Unique key.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Attempts before dead.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Cost hint.
    #[arg(long)]
    pub cost: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List jobs.
    Ls {
        /// Only this queue.
        #[arg(long, short)]
        queue: Option<String>,
        /// Only this state.
        #[arg(long, short)]
        state: Option<String>,
        /// Only this kind.
        #[arg(long, short)]
        kind: Option<String>,
        /// Only jobs with this tag.
        #[arg(long, short)]
        tag: Option<String>,
        /// Most jobs to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this id (a previous page's cursor).
        #[arg(long)]
        cursor: Option<u64>,
    },
    /// Show one job.
    Show { id: u64 },
    /// Run a dead, cancelled, scheduled or failed job now.
    Retry { id: u64 },
    /// Cancel a job.
    Cancel { id: u64 },
    /// Delete a job that is not running (an unfinished one counts as cancelled).
    Rm { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum QueuesCmd {
    /// List queues with counts.
    Ls,
    /// Show one queue.
    Show { name: String },
    /// Stop handing out jobs.
    Pause { name: String },
    /// Hand out jobs again.
    Resume { name: String },
    /// Change settings: `key=value` pairs, e.g. `order=smallest_cost max_attempts=5
    /// concurrency=10 rate_limit=50/1000/10 breaker=on max_depth=100000`.
    #[command(
        long_about = "Change settings: key=value pairs; only the keys named change.\n\n\
        Keys are those of PUT /v1/queues/{q} (see `weir queues show` and docs/flow_control.md); \
        nested ones are dotted: retention.completed_max=1000, breaker.consecutive_failures=5.\n\n\
        Shorthands:\n  \
        rate_limit=LIMIT[/PERIOD_MS[/BURST]]  at most LIMIT jobs start per PERIOD_MS \
        (default 1000 ms), and up to BURST at once after a quiet spell (default LIMIT); \
        rate_limit=0 removes it. group_rate_limit takes the same, per group key.\n  \
        backoff=BASE_MS..CAP_MS               retry delays double from BASE_MS up to CAP_MS.\n  \
        breaker=on|off                        add a circuit breaker with default settings, \
        or remove it.\n\n\
        Examples:\n  weir queues set emails concurrency=10 rate_limit=50/1000/10\n  \
        weir queues set emails breaker=on breaker.cooldown_ms=30000\n  \
        weir queues set reports order=smallest_cost aging_ms=60000 retention.dead_max=100"
    )]
    Set {
        name: String,
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Delete every unstarted job of the queue.
    Purge {
        name: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Delete the queue: every job, its settings and its history (refused while a job of it
    /// runs: pause it and let them finish first).
    Rm {
        name: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Retry every job of the queue in one state: dead (default), cancelled, failed or
    /// scheduled.
    Retry {
        name: String,
        #[arg(long, default_value = "dead")]
        state: String,
    },
    /// Delete every finished job of the queue in one state: completed, dead or cancelled.
    Clean {
        name: String,
        #[arg(long)]
        state: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CronCmd {
    /// Every entry with its last and next run.
    Ls,
    /// Create or replace an entry: `weir cron set nightly '0 3 * * *' reports daily
    /// '{"full":true}' --timezone Europe/Paris`.
    Set {
        name: String,
        /// Cron expression, seconds field optional (`*/5 * * * * *`: every 5 s).
        schedule: String,
        /// The job's queue.
        queue: String,
        /// The job's kind.
        kind: String,
        /// The job's payload as JSON (default `{}`).
        payload: Option<String>,
        /// IANA time zone of the schedule.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Ticks missed while no server ran: skip (default) or run_once.
        #[arg(long, default_value = "skip")]
        missed: String,
        /// The job's priority.
        #[arg(long)]
        priority: Option<i32>,
        /// The job's attempts before dead.
        #[arg(long)]
        max_attempts: Option<u32>,
    },
    /// Remove an entry (jobs it enqueued stay).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Print the value under KEY (raw bytes to stdout; exit 1 on a miss).
    Get {
        ns: String,
        key: String,
        /// Also say which tier answered, on stderr.
        #[arg(long)]
        tier: bool,
    },
    /// Store VALUE (or stdin when VALUE is absent or `-`) under KEY.
    Set {
        ns: String,
        key: String,
        value: Option<String>,
        /// Time to live: `500ms`, `30s`, `15m`, `24h`, `7d` or plain ms (default: the server's).
        #[arg(long)]
        ttl: Option<String>,
        /// A tag (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A key this entry depends on (repeat for more).
        #[arg(long = "dep")]
        deps: Vec<String>,
    },
    /// Remove KEY and what depends on it.
    Del { ns: String, key: String },
    /// Remove keys, every entry with a tag, and their dependents, on every instance.
    Invalidate {
        ns: String,
        /// A tag (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A key (repeat for more).
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// Retire every entry of a namespace at once.
    Bump { ns: String },
    /// Remove expired files, files unused for --older-than, then the least recently used
    /// down to --max-size.
    Prune {
        /// Largest size to keep: `500MiB`, `2GiB`, or bytes.
        #[arg(long)]
        max_size: Option<String>,
        /// Remove files unused for this long: `7d`, `12h`, ... or ms.
        #[arg(long)]
        older_than: Option<String>,
        /// Prune this cache folder directly, without a server (a server's is
        /// `<data_dir>/cache`; refused while a server has it open).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Prune a library user's default folder (`~/.cache/weir`).
        #[arg(long, conflicts_with = "dir")]
        default_dir: bool,
    },
    /// Hits, misses, bytes and entries per tier.
    Stats,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Refresh interval, ms.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print once and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Jobs for the throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub jobs: u64,
    /// Jobs per enqueue, fetch and ack request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Concurrent consumers.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Payload size, bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Rate of the latency run, jobs/s (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Length of the latency run, s.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Queue to use (it is purged first).
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// Spread the jobs over this many ordered groups (0: no groups).
    #[arg(long, default_value_t = 0)]
    pub groups: u64,
    /// Jobs of one group that may run at once (1: ordered groups).
    #[arg(long, default_value_t = 1)]
    pub group_concurrency: u32,
    /// Put a rate limit of this many jobs/s on each group key (0: none).
    #[arg(long, default_value_t = 0)]
    pub group_rate: u32,
    /// Put a rate limit of this many jobs/s on the queue (0: none).
    #[arg(long, default_value_t = 0)]
    pub queue_rate: u32,
    /// Put a concurrency limit on the queue (0: none).
    #[arg(long, default_value_t = 0)]
    pub queue_concurrency: u32,
    /// Put a circuit breaker on the queue.
    #[arg(long)]
    pub breaker: bool,
}

/// Parses the command line. Help and version print and exit 0; a usage error prints one
/// line and exits 2.
pub fn parse() -> Result<Cli, ExitCode> {
    use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    // The client flags are global so that they go before or after the subcommand, but the
    // server commands do not read them: a hidden flag of the same name in those commands
    // keeps them out of their help (clap does not propagate a global over a local one).
    for server_side in ["serve", "migrate"] {
        cmd = cmd.mut_subcommand(server_side, |c| {
            let c = c
                .arg(Arg::new("server").long("server").hide(true))
                .arg(Arg::new("token").long("token").hide(true));
            if server_side == "serve" {
                c.arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .hide(true),
                )
            } else {
                c
            }
        });
    }
    match cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => Ok(c),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return Err(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        ExitCode::from(2)
                    } else {
                        ExitCode::SUCCESS
                    },
                );
            }
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad usage")
                .trim_start_matches("error: ");
            eprintln!("weir: {line} (see weir --help)");
            Err(ExitCode::from(2))
        }
    }
}
