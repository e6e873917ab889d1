//! The `weir` binary: parses the command line and dispatches; the work lives in the library
//! crates and in one module per command under [`cmd`].

#![allow(missing_docs)]

mod cli;
mod cmd;
mod out;
mod units;

use mimalloc::MiMalloc;

/// mimalloc: measurably faster than the system allocator for the engine's many small
/// allocations (see BENCHMARKS.md). Built without its transparent-huge-page advice
/// (`no_thp`, in the workspace manifest): the 2 MiB zeroing on each fresh fault cost more
/// than the huge pages saved.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    let args = match cli::parse() {
        Ok(a) => a,
        Err(code) => return code,
    };
    // A client command piped into `head` ends quietly when the pipe closes, as Unix tools
    // do, instead of panicking in `println!`. The server keeps Rust's default (EPIPE as an
    // error): its logs must never kill it.
    if !matches!(args.command, cli::Command::Serve(_)) {
        sigpipe::reset();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(cmd::run(args))
}
