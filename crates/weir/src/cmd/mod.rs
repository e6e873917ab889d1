//! One module per command, each with `run(args) -> CmdResult`.

mod bench;
mod cache;
mod cron;
mod jobs;
mod migrate;
mod push;
mod queues;
mod serve;
mod stats;

use crate::cli::{Cli, Command};
use crate::out::{CmdResult, Failure};
use std::process::ExitCode;
use weir_client::Client;

pub async fn run(cli: Cli) -> ExitCode {
    let result = dispatch(cli).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("weir: {}", f.message());
            f.code()
        }
    }
}

async fn dispatch(cli: Cli) -> CmdResult {
    let g = &cli.global;
    match cli.command {
        Command::Serve(a) => serve::run(a).await,
        Command::Push(a) => push::run(&client(g)?, a, g.json).await,
        Command::Jobs(c) => jobs::run(&client(g)?, c, g.json).await,
        Command::Queues(c) => queues::run(&client(g)?, c, g.json).await,
        Command::Cache(c) => cache::run(g, c).await,
        Command::Cron(c) => cron::run(&client(g)?, c, g.json).await,
        Command::Stats(a) => stats::run(&client(g)?, a, g.json).await,
        Command::Bench(a) => bench::run(&client(g)?, a, g.json).await,
        Command::Migrate(a) => migrate::run(a, g.json).await,
    }
}

pub(crate) fn client(g: &crate::cli::Global) -> Result<Client, Failure> {
    if !(g.server.starts_with("http://") || g.server.starts_with("https://")) {
        return Err(Failure::usage(format!(
            "--server {:?} must start with http:// or https://",
            g.server
        )));
    }
    let c = Client::new(&g.server)?;
    Ok(match &g.token {
        Some(t) => c.with_token(t),
        None => c,
    })
}
