//! Invalidation across instances, and the Redis tier's reconnects.
//!
//! Every invalidation, bump and flush is appended by its Lua script to a Redis stream
//! (`P bus`, trimmed to about 10,000 events) with a sequence number from `P seq`, in the
//! same atomic step that changes Redis. Each instance reads the stream with a blocking
//! `XREAD` (delivery within milliseconds, like pub/sub) and applies other instances'
//! events to its memory and disk tiers.
//!
//! Unlike pub/sub, a stream cannot lose a message silently: the sequence numbers show a
//! gap. After a disconnect the reader resumes where it was; if the events it needs were
//! trimmed, if Redis lost its data (the sequence went backwards), or if the process
//! restarted with disk entries and no record of where it was, the local tiers are retired
//! at once (O(1), see `Disk::retire_all`). So a missed event never leaves a stale entry
//! alive longer than Redis is unreachable plus one reconnect attempt (500 ms).
//!
//! While Redis is down every instance serves from memory and disk; invalidations made
//! meanwhile reach the other instances once Redis is back (replayed by `Remote::replay`).

use crate::remote::Remote;
use crate::Inner;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const BLOCK: Duration = Duration::from_millis(1000);
const RETRY: Duration = Duration::from_millis(500);

/// One event from the stream.
#[derive(Debug)]
struct Event {
    id: String,
    seq: u64,
    origin: String,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Invalidate {
        ns: String,
        keys: Vec<String>,
        tags: Vec<String>,
    },
    Bump {
        ns: String,
        version: u64,
    },
    Flush,
    Unknown,
}

fn field(map: &HashMap<String, Value>, name: &str) -> Option<String> {
    map.get(name)
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

fn parse(id: String, map: &HashMap<String, Value>) -> Option<Event> {
    let seq = field(map, "seq")?.parse().ok()?;
    let origin = field(map, "origin").unwrap_or_default();
    let list = |name| -> Vec<String> {
        field(map, name)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    };
    let op = match field(map, "op").as_deref() {
        Some("inv") => Op::Invalidate {
            ns: field(map, "ns")?,
            keys: list("keys"),
            tags: list("tags"),
        },
        Some("bump") => Op::Bump {
            ns: field(map, "ns")?,
            version: field(map, "version")?.parse().ok()?,
        },
        Some("flush") => Op::Flush,
        _ => Op::Unknown,
    };
    Some(Event {
        id,
        seq,
        origin,
        op,
    })
}

/// Where this instance is in the stream.
struct Cursor {
    dataset: Option<String>,
    id: Option<String>,
    seq: Option<u64>,
    saved_at: Instant,
}

/// Runs until the cache is dropped: connects, catches up, reads events; on any failure
/// marks the tier down and starts over every [`RETRY`].
pub(crate) async fn supervise(
    weak: Weak<Inner>,
    remote: Arc<Remote>,
    first_attempt: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    let saved = weak.upgrade().and_then(|i| i.saved_bus_position());
    let mut cursor = Cursor {
        dataset: saved.as_ref().map(|s| s.0.clone()),
        id: None,
        seq: saved.map(|s| s.1),
        saved_at: Instant::now(),
    };
    let mut warned = false;
    loop {
        if weak.strong_count() == 0 {
            return;
        }
        let attempt = connect_and_catch_up(&weak, &remote, &mut cursor).await;
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        match attempt {
            Ok(bus) => {
                if warned {
                    tracing::info!("redis cache tier is back");
                }
                warned = false;
                read_events(&weak, &remote, &mut cursor, bus).await;
            }
            Err(e) => {
                if !remote.mark_down(&e) && !warned {
                    tracing::warn!(error = %e, "redis cache tier unreachable; serving from memory and disk, retrying");
                }
                warned = true;
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = remote.wake.notified() => tokio::time::sleep(RETRY).await,
                }
            }
        }
    }
}

async fn connect_and_catch_up(
    weak: &Weak<Inner>,
    remote: &Remote,
    cursor: &mut Cursor,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let mut cmd = remote.connect(None).await?;
    let bus = remote.connect(Some(BLOCK)).await?;
    let inner = weak.upgrade().ok_or("cache dropped")?;
    let dataset = remote.dataset(&mut cmd).await?;
    if cursor.dataset.as_ref().is_some_and(|d| *d != dataset) {
        inner.retire_local("Redis lost its data (restarted empty or flushed)");
        cursor.id = None;
        cursor.seq = None;
    }
    cursor.dataset = Some(dataset);
    let complete = remote.replay(&mut cmd).await?;
    if !complete {
        inner.retire_local("too many invalidations were made while Redis was down");
    }
    let local = inner.versions_snapshot();
    for (ns, v) in remote.sync_versions(&mut cmd, &local).await? {
        inner.adopt_version(&ns, v);
    }
    let stream = format!("{}bus", remote.prefix);
    let (cur, tail, head): (Option<u64>, StreamRange, StreamRange) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(format!("{}seq", remote.prefix))
        .cmd("XREVRANGE")
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut cmd)
        .await
        .map_err(|e| e.to_string())?;
    let cur = cur.unwrap_or(0);
    let tail_id = tail.first_id().unwrap_or_else(|| "0-0".to_string());
    let head_seq = head.first_seq();
    match cursor.seq {
        None => {
            if inner.has_local_entries() {
                inner.retire_local(
                    "disk entries from before a start with no record of missed invalidations",
                );
            }
            jump(cursor, &inner, tail_id, cur);
        }
        Some(s) if cur < s => {
            inner.retire_local("the invalidation sequence went backwards");
            jump(cursor, &inner, tail_id, cur);
        }
        Some(s) if cur == s => {
            if cursor.id.is_none() {
                cursor.id = Some(tail_id);
            }
        }
        Some(s) => {
            if head_seq.is_none_or(|h| h > s + 1) {
                inner.retire_local(
                    "invalidations were trimmed from the stream before this instance read them",
                );
                jump(cursor, &inner, tail_id, cur);
            } else if cursor.id.is_none() {
                cursor.id = Some("0-0".to_string());
            }
        }
    }
    remote.set_up(cmd);
    Ok(bus)
}

fn jump(cursor: &mut Cursor, inner: &Inner, tail_id: String, seq: u64) {
    cursor.id = Some(tail_id);
    cursor.seq = Some(seq);
    save(cursor, inner);
}

fn save(cursor: &mut Cursor, inner: &Inner) {
    if let (Some(d), Some(s)) = (&cursor.dataset, cursor.seq) {
        inner.save_bus_position(d, s);
    }
    cursor.saved_at = Instant::now();
}

/// `XRANGE`/`XREVRANGE` with `COUNT 1`: zero or one entry.
struct StreamRange(Vec<(String, HashMap<String, Value>)>);

impl redis::FromRedisValue for StreamRange {
    fn from_redis_value(v: Value) -> Result<Self, redis::ParsingError> {
        let r: redis::streams::StreamRangeReply = redis::from_redis_value(v)?;
        Ok(StreamRange(
            r.ids.into_iter().map(|e| (e.id, e.map)).collect(),
        ))
    }
}

impl StreamRange {
    fn first_id(&self) -> Option<String> {
        self.0.first().map(|e| e.0.clone())
    }
    fn first_seq(&self) -> Option<u64> {
        self.0
            .first()
            .and_then(|e| field(&e.1, "seq")?.parse().ok())
    }
}

async fn read_events(
    weak: &Weak<Inner>,
    remote: &Remote,
    cursor: &mut Cursor,
    mut bus: redis::aio::MultiplexedConnection,
) {
    let stream = format!("{}bus", remote.prefix);
    let opts = StreamReadOptions::default()
        .block(BLOCK.as_millis() as usize)
        .count(512);
    loop {
        if !remote.is_up() || weak.strong_count() == 0 {
            return;
        }
        let from = cursor.id.clone().unwrap_or_else(|| "0-0".to_string());
        let got: redis::RedisResult<Option<StreamReadReply>> =
            bus.xread_options(&[&stream], &[&from], &opts).await;
        let reply = match got {
            Ok(r) => r,
            Err(e) => {
                remote.mark_down(&e.to_string());
                return;
            }
        };
        let Some(inner) = weak.upgrade() else {
            return;
        };
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let id = entry.id.clone();
                let Some(ev) = parse(entry.id, &entry.map) else {
                    cursor.id = Some(id);
                    continue;
                };
                apply(&inner, remote, cursor, ev);
            }
        }
        if cursor.saved_at.elapsed() >= Duration::from_secs(1) {
            save(cursor, &inner);
        }
    }
}

fn apply(inner: &Inner, remote: &Remote, cursor: &mut Cursor, ev: Event) {
    cursor.id = Some(ev.id);
    let last = cursor.seq.unwrap_or(0);
    if ev.seq <= last && cursor.seq.is_some() {
        return;
    }
    if cursor.seq.is_some() && ev.seq != last + 1 {
        inner.retire_local("a gap in the invalidation stream");
    }
    cursor.seq = Some(ev.seq);
    if ev.origin == remote.origin {
        return;
    }
    match ev.op {
        Op::Invalidate { ns, keys, tags } => {
            inner.invalidate_local_sync(&ns, &keys, &tags);
        }
        Op::Bump { ns, version } => inner.adopt_version(&ns, version),
        Op::Flush => inner.retire_local("another instance asked every instance to flush"),
        Op::Unknown => {}
    }
}
