//! `weir cache get|set|del|invalidate|bump|prune|stats`: the server's cache over HTTP, and
//! `prune --dir` on a cache folder directly (no server needed, e.g. from cron).

use crate::cli::{CacheCmd, Global};
use crate::out::{self, CmdResult, Failure};
use crate::units::{parse_duration_ms, parse_size};
use std::io::{Read, Write};
use weir_api::{CachePruneBody, CacheStatsView, CacheTierView};
use weir_cache::{CacheConfig, Disk};

pub async fn run(g: &Global, cmd: CacheCmd) -> CmdResult {
    let json = g.json;
    match cmd {
        CacheCmd::Prune {
            max_size,
            older_than,
            dir,
            default_dir,
        } => {
            let max_bytes = max_size.as_deref().map(parse_size).transpose()?;
            let older_than_ms = older_than.as_deref().map(parse_duration_ms).transpose()?;
            let local = match (dir, default_dir) {
                (Some(d), _) => Some(d),
                (None, true) => Some(CacheConfig::default().disk_dir().ok_or_else(|| {
                    Failure::usage("no home or XDG cache folder is known; pass --dir")
                })?),
                (None, false) => None,
            };
            let report = match local {
                Some(dir) => prune_folder(dir, max_bytes, older_than_ms).await?,
                None => {
                    let r = super::client(g)?
                        .cache_prune(&CachePruneBody {
                            max_bytes,
                            older_than_ms,
                        })
                        .await?;
                    weir_cache::PruneReport {
                        files: r.files,
                        bytes: r.bytes,
                        files_left: r.files_left,
                        bytes_left: r.bytes_left,
                    }
                }
            };
            if json {
                return out::json(&report);
            }
            println!(
                "removed {} files ({}); kept {} files ({})",
                report.files,
                human_bytes(report.bytes),
                report.files_left,
                human_bytes(report.bytes_left)
            );
            Ok(())
        }
        other => over_http(g, other, json).await,
    }
}

async fn over_http(g: &Global, cmd: CacheCmd, json: bool) -> CmdResult {
    let client = super::client(g)?;
    match cmd {
        CacheCmd::Get { ns, key, tier } => match client.cache_get(&ns, &key).await? {
            Some((value, from)) => {
                if json {
                    return out::json(&serde_json::json!({
                        "value": String::from_utf8_lossy(&value),
                        "tier": from,
                    }));
                }
                if tier {
                    eprintln!("tier: {from}");
                }
                std::io::stdout()
                    .write_all(&value)
                    .map_err(|e| Failure::Runtime(e.to_string()))
            }
            None => Err(Failure::Runtime(format!(
                "miss: no live entry under {key:?} in {ns:?}"
            ))),
        },
        CacheCmd::Set {
            ns,
            key,
            value,
            ttl,
            tags,
            deps,
        } => {
            let ttl_ms = ttl.as_deref().map(parse_duration_ms).transpose()?;
            let bytes = match value.as_deref() {
                Some(v) if v != "-" => v.as_bytes().to_vec(),
                _ => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| Failure::Runtime(format!("reading stdin: {e}")))?;
                    buf
                }
            };
            let n = bytes.len();
            client
                .cache_set(&ns, &key, bytes, ttl_ms, &tags, &deps)
                .await?;
            if json {
                return out::json(&serde_json::json!({ "stored": n }));
            }
            println!("stored {n} bytes under {key:?} in {ns:?}");
            Ok(())
        }
        CacheCmd::Del { ns, key } => removed(client.cache_delete(&ns, &key).await?, json),
        CacheCmd::Invalidate { ns, tags, keys } => {
            if tags.is_empty() && keys.is_empty() {
                return Err(Failure::usage("name at least one --tag or --key"));
            }
            removed(client.cache_invalidate(&ns, keys, tags).await?, json)
        }
        CacheCmd::Bump { ns } => {
            let v = client.cache_bump(&ns).await?;
            if json {
                return out::json(&serde_json::json!({ "namespace": ns, "version": v }));
            }
            println!("{ns} is now at version {v}; every earlier entry is retired");
            Ok(())
        }
        CacheCmd::Stats => {
            let s = client.cache_stats().await?;
            if json {
                return out::json(&s);
            }
            print_stats(&s);
            Ok(())
        }
        CacheCmd::Prune { .. } => Ok(()),
    }
}

fn removed(n: u64, json: bool) -> CmdResult {
    if json {
        return out::json(&serde_json::json!({ "removed": n }));
    }
    println!("removed {n} entries");
    Ok(())
}

async fn prune_folder(
    dir: std::path::PathBuf,
    max_bytes: Option<u64>,
    older_than_ms: Option<u64>,
) -> Result<weir_cache::PruneReport, Failure> {
    if !dir.join("v1").is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a Weir cache folder (no v1/ inside)",
            dir.display()
        )));
    }
    tokio::task::spawn_blocking(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let disk = Disk::open(&dir, u64::MAX, u64::MAX, now)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
        Ok(disk.prune(max_bytes, older_than_ms, now).0)
    })
    .await
    .map_err(|e| Failure::Runtime(e.to_string()))?
}

fn print_stats(s: &CacheStatsView) {
    let opt = |v: Option<u64>, f: fn(u64) -> String| v.map_or("-".to_string(), f);
    let row = |name: &str, t: &CacheTierView| {
        vec![
            if t.enabled {
                name.to_string()
            } else {
                format!("{name} (off)")
            },
            t.hits.to_string(),
            t.misses.to_string(),
            format!("{:.1} %", t.hit_ratio * 100.0),
            opt(t.entries, |n| n.to_string()),
            opt(t.bytes, human_bytes),
            t.evictions.to_string(),
            t.invalidations.to_string(),
            t.errors.to_string(),
        ]
    };
    out::table(
        &[
            "tier",
            "hits",
            "misses",
            "hit ratio",
            "entries",
            "bytes",
            "evicted",
            "invalidated",
            "errors",
        ],
        &[
            row("memory", &s.memory),
            row("disk", &s.disk),
            row("redis", &s.redis),
        ],
    );
    println!(
        "redis {}; {} outages; {} computations, {} callers coalesced; {} resyncs",
        if s.redis_up { "up" } else { "down or off" },
        s.redis_outages,
        s.computations,
        s.coalesced,
        s.resyncs
    );
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}
