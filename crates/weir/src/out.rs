//! Output and failure: human tables or JSON, and the exit codes (2: bad usage or input the
//! server refused, 1: anything else).

use std::process::ExitCode;
use weir_client::ClientError;

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or input: exit 2.
    Usage(String),
    /// The server or the machine failed: exit 1.
    Runtime(String),
}

impl Failure {
    pub fn usage(msg: impl Into<String>) -> Self {
        Failure::Usage(msg.into())
    }

    pub fn code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Runtime(_) => ExitCode::from(1),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) => m,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            // The server refused the request (4xx): the input was wrong.
            ClientError::Problem(p) if p.status < 500 => Failure::Usage(match p.field {
                Some(f) => format!("{} ({f}): {}", p.title, p.detail),
                None => format!("{}: {}", p.title, p.detail),
            }),
            ClientError::Transport(t) => Failure::Runtime(format!(
                "cannot reach the server ({t}); is `weir serve` running? (--server, WEIR_SERVER)"
            )),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(format!("{e:#}"))
    }
}

pub type CmdResult = Result<(), Failure>;

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(v: &T) -> CmdResult {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::Runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Prints a value as one line of JSON (for streams: NDJSON).
pub fn json_line<T: serde::Serialize>(v: &T) -> CmdResult {
    let text = serde_json::to_string(v).map_err(|e| Failure::Runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Prints rows as an aligned table: first column left, the rest right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.to_vec()));
    for r in rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// `1234 ms` → `1.2 s`, `None` → `-`.
pub fn ms(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(u64::MAX) => ">300 s".into(),
        Some(v) if v >= 1000 => format!("{:.1} s", v as f64 / 1000.0),
        Some(v) => format!("{v} ms"),
    }
}
