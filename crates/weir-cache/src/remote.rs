//! L3: Redis, shared by every Weir instance of a deployment, on the `redis` crate.
//!
//! Keys (under the configured prefix `P`, `weir:cache:` by default):
//! - `P v:<ns>:<version>:<key>`: an entry in [`crate::entry`]'s byte format, expiring at
//!   min(its own expiry, now + the tier's cap). The namespace version is part of the name,
//!   so a bump retires every entry of the namespace without touching one.
//! - `P t:<ns>:<tag>`: the keys carrying a tag; `P d:<ns>:<key>`: the keys depending on a key.
//! - `P versions`: namespace versions; `P seq` and `P bus`: the invalidation stream (see
//!   `bus.rs`).
//!
//! Invalidation runs as one Lua script: it walks tags and dependents breadth-first (each
//! key once, so cycles end), deletes what it reaches, and appends the event to the stream,
//! all atomically. Scripts name keys they compute, so this tier wants a single Redis (or a
//! primary with replicas), not Redis Cluster.
//!
//! Failure handling: every call has a deadline; the first failure marks the tier down (one
//! warning, one count), after which calls skip Redis entirely until the supervisor in
//! `bus.rs` reconnects. Invalidations and bumps made while it is down are kept (bounded)
//! and replayed on reconnect, so Redis never keeps a value this instance invalidated.

use crate::entry::Entry;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Most invalidations kept while Redis is down; past it, reconnecting retires everything.
const MAX_PENDING: usize = 100_000;
/// Entries the invalidation stream keeps (approximately).
pub(crate) const STREAM_MAXLEN: u64 = 10_000;

const INVALIDATE: &str = r#"
local p, ns, ver, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keys, tags = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local seen, queue, removed = {}, {}, {}
for _, k in ipairs(keys) do
  if not seen[k] then seen[k] = true; queue[#queue + 1] = k end
end
for _, t in ipairs(tags) do
  local ts = p .. 't:' .. ns .. ':' .. t
  for _, k in ipairs(redis.call('SMEMBERS', ts)) do
    if not seen[k] then seen[k] = true; queue[#queue + 1] = k end
  end
  redis.call('DEL', ts)
end
local i = 1
while i <= #queue do
  local k = queue[i]
  i = i + 1
  if redis.call('DEL', p .. 'v:' .. ns .. ':' .. ver .. ':' .. k) == 1 then
    removed[#removed + 1] = k
  end
  local ds = p .. 'd:' .. ns .. ':' .. k
  for _, d in ipairs(redis.call('SMEMBERS', ds)) do
    if not seen[d] then seen[d] = true; queue[#queue + 1] = d end
  end
  redis.call('DEL', ds)
end
local seq = redis.call('INCR', p .. 'seq')
local closure = '[]'
if #queue > 0 then closure = cjson.encode(queue) end
redis.call('XADD', p .. 'bus', 'MAXLEN', '~', ARGV[7], '*', 'seq', seq, 'origin', origin,
  'op', 'inv', 'ns', ns, 'keys', closure, 'tags', ARGV[6])
return {removed, queue}
"#;

const BUMP: &str = r#"
local p, ns, origin = ARGV[1], ARGV[2], ARGV[4]
local cur = tonumber(redis.call('HGET', p .. 'versions', ns) or '0')
local v = math.max(cur + 1, tonumber(ARGV[3]))
redis.call('HSET', p .. 'versions', ns, v)
local seq = redis.call('INCR', p .. 'seq')
redis.call('XADD', p .. 'bus', 'MAXLEN', '~', ARGV[5], '*', 'seq', seq, 'origin', origin,
  'op', 'bump', 'ns', ns, 'version', v)
return v
"#;

const RAISE_VERSION: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cur < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"#;

const FLUSH: &str = r#"
local p, origin = ARGV[1], ARGV[2]
local seq = redis.call('INCR', p .. 'seq')
redis.call('XADD', p .. 'bus', 'MAXLEN', '~', ARGV[3], '*', 'seq', seq, 'origin', origin,
  'op', 'flush')
return seq
"#;

/// An operation made while Redis was down, replayed when it is back.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Invalidate {
        ns: String,
        version: u64,
        keys: Vec<String>,
        tags: Vec<String>,
    },
    Bump {
        ns: String,
        at_least: u64,
    },
}

/// What an invalidation reached in Redis.
#[derive(Debug, Default)]
pub(crate) struct Invalidated {
    /// Keys whose entry Redis held and deleted.
    pub removed: Vec<String>,
    /// Every key the walk reached.
    pub closure: Vec<String>,
}

/// The Redis tier.
pub(crate) struct Remote {
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    pub prefix: String,
    cap_ms: u64,
    timeout: Duration,
    /// This instance's name on the bus (its own events are not applied twice).
    pub origin: String,
    pending: Mutex<VecDeque<Pending>>,
    overflowed: AtomicBool,
    /// Times the tier went down.
    pub outages: std::sync::atomic::AtomicU64,
    /// Wakes the supervisor when a call marks the tier down.
    pub wake: tokio::sync::Notify,
    invalidate: redis::Script,
    bump: redis::Script,
    raise: redis::Script,
    flush: redis::Script,
}

/// A Redis failure (the caller counts it and goes on without the tier).
pub(crate) type RedisFail = String;

impl Remote {
    pub fn new(url: &str, prefix: &str, cap_ms: u64, timeout_ms: u64) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        Ok(Remote {
            client,
            conn: RwLock::new(None),
            up: AtomicBool::new(false),
            prefix: prefix.to_string(),
            cap_ms,
            timeout: Duration::from_millis(timeout_ms.max(1)),
            origin: format!("{:016x}", fastrand::u64(..)),
            pending: Mutex::new(VecDeque::new()),
            overflowed: AtomicBool::new(false),
            outages: std::sync::atomic::AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            invalidate: redis::Script::new(INVALIDATE),
            bump: redis::Script::new(BUMP),
            raise: redis::Script::new(RAISE_VERSION),
            flush: redis::Script::new(FLUSH),
        })
    }

    /// Whether calls go to Redis now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn set_up(&self, conn: MultiplexedConnection) {
        *self.conn.write() = Some(conn);
        self.up.store(true, Ordering::Release);
    }

    /// Marks the tier down after `err`; true when it was up (the caller logs once).
    pub fn mark_down(&self, err: &str) -> bool {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = err,
                "redis cache tier down; serving from memory and disk"
            );
            self.wake.notify_one();
        }
        was_up
    }

    /// A fresh connection: `block` for one that runs blocking reads (no response deadline
    /// shorter than the block).
    pub async fn connect(
        &self,
        block: Option<Duration>,
    ) -> Result<MultiplexedConnection, RedisFail> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(match block {
                Some(b) => b + Duration::from_secs(5),
                None => self.timeout,
            }));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| e.to_string())
    }

    fn conn(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.read().clone()
    }

    fn value_key(&self, ns: &str, version: u64, key: &str) -> String {
        format!("{}v:{ns}:{version}:{key}", self.prefix)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, RedisFail>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// The entry for `key`, `Ok(None)` when Redis does not hold it, `Err` when Redis is
    /// down (or just failed).
    pub async fn get(&self, ns: &str, version: u64, key: &str) -> Result<Option<Entry>, RedisFail> {
        let mut c = self.conn().ok_or("down")?;
        let k = self.value_key(ns, version, key);
        let got: Option<Vec<u8>> = self
            .run(redis::cmd("GET").arg(&k).query_async(&mut c))
            .await?;
        Ok(got.and_then(|b| Entry::decode(Bytes::from(b))))
    }

    /// Writes `entry` with its tags and dependency links, atomically.
    pub async fn set(&self, entry: &Entry, now_ms: u64) -> Result<(), RedisFail> {
        let mut c = self.conn().ok_or("down")?;
        let m = &entry.meta;
        let until = m.expires_ms.min(now_ms.saturating_add(self.cap_ms));
        if until <= now_ms {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("SET")
            .arg(self.value_key(&m.ns, m.version, &m.key))
            .arg(entry.encode())
            .arg("PX")
            .arg(until - now_ms)
            .ignore();
        for (kind, names) in [("t", &m.tags), ("d", &m.deps)] {
            for n in names {
                let set = format!("{}{kind}:{}:{n}", self.prefix, m.ns);
                p.cmd("SADD").arg(&set).arg(&m.key).ignore();
                p.cmd("PEXPIRE").arg(&set).arg(self.cap_ms).ignore();
            }
        }
        self.run(p.query_async::<()>(&mut c)).await
    }

    /// Runs the invalidation script (see the module's comment).
    pub async fn invalidate(
        &self,
        ns: &str,
        version: u64,
        keys: &[String],
        tags: &[String],
    ) -> Result<Invalidated, RedisFail> {
        let mut c = self.conn().ok_or("down")?;
        self.invalidate_on(&mut c, ns, version, keys, tags).await
    }

    async fn invalidate_on(
        &self,
        c: &mut MultiplexedConnection,
        ns: &str,
        version: u64,
        keys: &[String],
        tags: &[String],
    ) -> Result<Invalidated, RedisFail> {
        let keys_json = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        let tags_json = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        let mut inv = self.invalidate.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(ns)
            .arg(version)
            .arg(&self.origin)
            .arg(keys_json)
            .arg(tags_json)
            .arg(STREAM_MAXLEN);
        let (removed, closure): (Vec<String>, Vec<String>) = self.run(inv.invoke_async(c)).await?;
        Ok(Invalidated { removed, closure })
    }

    /// Raises `ns`'s version past its current one (and to at least `at_least`), announces
    /// it, and returns it.
    pub async fn bump(&self, ns: &str, at_least: u64) -> Result<u64, RedisFail> {
        let mut c = self.conn().ok_or("down")?;
        self.bump_on(&mut c, ns, at_least).await
    }

    async fn bump_on(
        &self,
        c: &mut MultiplexedConnection,
        ns: &str,
        at_least: u64,
    ) -> Result<u64, RedisFail> {
        let mut inv = self.bump.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(ns)
            .arg(at_least)
            .arg(&self.origin)
            .arg(STREAM_MAXLEN);
        self.run(inv.invoke_async(c)).await
    }

    /// Keeps `op` for replay once Redis is back.
    pub fn defer(&self, op: Pending) {
        let mut q = self.pending.lock();
        if q.len() >= MAX_PENDING {
            q.clear();
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        if !self.overflowed.load(Ordering::Acquire) {
            q.push_back(op);
        }
    }

    /// Replays what was deferred, on `c`, in order. Returns false when it overflowed
    /// (the caller then retires everything), after announcing a flush to every instance
    /// and deleting this deployment's entries from Redis.
    pub async fn replay(&self, c: &mut MultiplexedConnection) -> Result<bool, RedisFail> {
        if self.overflowed.load(Ordering::Acquire) {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .run(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(format!("{}v:*", self.prefix))
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(c),
                    )
                    .await?;
                if !keys.is_empty() {
                    self.run(redis::cmd("UNLINK").arg(&keys).query_async::<()>(c))
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let mut inv = self.flush.prepare_invoke();
            inv.arg(&self.prefix).arg(&self.origin).arg(STREAM_MAXLEN);
            self.run(inv.invoke_async::<u64>(c)).await?;
            self.pending.lock().clear();
            self.overflowed.store(false, Ordering::Release);
            return Ok(false);
        }
        loop {
            let Some(op) = self.pending.lock().front().cloned() else {
                return Ok(true);
            };
            match &op {
                Pending::Invalidate {
                    ns,
                    version,
                    keys,
                    tags,
                } => {
                    self.invalidate_on(c, ns, *version, keys, tags).await?;
                }
                Pending::Bump { ns, at_least } => {
                    self.bump_on(c, ns, *at_least).await?;
                }
            }
            self.pending.lock().pop_front();
        }
    }

    /// The identity of the data Redis holds: a random name this deployment's first
    /// instance stores and every later one reads. A different name than last time means
    /// Redis lost its data (restarted without persistence, flushed, failed over to an
    /// empty replica) and with it any record of invalidations.
    pub async fn dataset(&self, c: &mut MultiplexedConnection) -> Result<String, RedisFail> {
        let key = format!("{}dataset", self.prefix);
        let mine = format!("{:016x}", fastrand::u64(..));
        let (_, id): ((), String) = self
            .run(
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&mine)
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(&key)
                    .query_async::<(String,)>(c),
            )
            .await
            .map(|(id,)| ((), id))?;
        Ok(id)
    }

    /// Namespace versions as Redis has them, after raising any of `local` it holds lower.
    pub async fn sync_versions(
        &self,
        c: &mut MultiplexedConnection,
        local: &HashMap<String, u64>,
    ) -> Result<HashMap<String, u64>, RedisFail> {
        let key = format!("{}versions", self.prefix);
        for (ns, v) in local {
            let mut inv = self.raise.prepare_invoke();
            inv.key(&key).arg(ns).arg(*v);
            self.run(inv.invoke_async::<i64>(c)).await?;
        }
        let all: HashMap<String, u64> = self
            .run(redis::cmd("HGETALL").arg(&key).query_async(c))
            .await?;
        Ok(all)
    }
}
