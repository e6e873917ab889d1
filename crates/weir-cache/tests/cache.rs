//! The cache's rules, against real Redis on 127.0.0.1:6379 (each test under its own key
//! prefix) and, for outages, a Redis of the test's own that it kills and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_cache::{Cache, CacheConfig, CacheError, SetOptions, Tier};
use weir_core::clock::ManualClock;

const REDIS: &str = "redis://127.0.0.1:6379/0";
const T0: u64 = 1_800_000_000_000;

struct Setup {
    dir: tempfile::TempDir,
    prefix: String,
    clock: ManualClock,
}

impl Setup {
    fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("weir-test:{:016x}:", fastrand::u64(..)),
            clock: ManualClock::new(T0),
        }
    }

    fn config(&self, redis: bool) -> CacheConfig {
        CacheConfig {
            dir: Some(self.dir.path().to_path_buf()),
            redis_url: redis.then(|| REDIS.to_string()),
            redis_prefix: self.prefix.clone(),
            ..Default::default()
        }
    }

    /// Another instance's disk folder, same Redis prefix.
    fn config_other(&self, dir: &tempfile::TempDir) -> CacheConfig {
        CacheConfig {
            dir: Some(dir.path().to_path_buf()),
            ..self.config(true)
        }
    }

    async fn open(&self, config: CacheConfig) -> Cache {
        let redis = config.redis_url.is_some();
        let c = Cache::open_with_clock(config, Arc::new(self.clock.clone()))
            .await
            .unwrap();
        if redis {
            wait_until("redis tier up", Duration::from_secs(5), || c.redis_up()).await;
        }
        c
    }
}

/// Polls `cond` until it holds, failing after `limit`. Used only where the signal is the
/// property under test (a remote instance's state), never to order the test's own steps.
async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn opts(ttl_ms: u64, tags: &[&str], deps: &[&str]) -> SetOptions {
    SetOptions {
        ttl_ms: Some(ttl_ms),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        deps: deps.iter().map(|s| s.to_string()).collect(),
    }
}

async fn in_tiers(c: &Cache, ns: &str, key: &str) -> Vec<Tier> {
    let mut out = Vec::new();
    for t in Tier::ALL {
        if c.peek(t, ns, key).await.is_some() {
            out.push(t);
        }
    }
    out
}

#[tokio::test]
async fn ttl_expires_on_the_injected_clock_in_every_tier() {
    let s = Setup::new();
    let c = s.open(s.config(true)).await;
    c.set("n", "k", b("v"), &opts(1_000, &[], &[]))
        .await
        .unwrap();
    assert_eq!(in_tiers(&c, "n", "k").await, Tier::ALL.to_vec());
    s.clock.advance(999);
    let hit = c.get("n", "k").await.unwrap().expect("alive at 999 ms");
    assert_eq!((hit.tier, hit.value), (Tier::Memory, b("v")));
    assert_eq!(hit.expires_ms, T0 + 1_000);
    s.clock.advance(1);
    assert_eq!(c.get("n", "k").await.unwrap(), None, "expired at 1000 ms");
    // A second instance (empty memory and disk) does not take the expired entry from Redis.
    let other_dir = tempfile::tempdir().unwrap();
    let c2 = s.open(s.config_other(&other_dir)).await;
    assert_eq!(c2.get("n", "k").await.unwrap(), None);
}

#[tokio::test]
async fn tier_caps_shorten_and_promotion_never_extends() {
    let s = Setup::new();
    let config = CacheConfig {
        memory_ttl_cap_ms: 100,
        ..s.config(true)
    };
    let c = s.open(config.clone()).await;
    c.set("n", "k", b("v"), &opts(10_000, &[], &[]))
        .await
        .unwrap();
    s.clock.advance(150);
    let hit = c.get("n", "k").await.unwrap().unwrap();
    assert_eq!(
        hit.tier,
        Tier::Disk,
        "memory's 100 ms cap passed; disk still has it"
    );
    assert_eq!(
        hit.expires_ms,
        T0 + 10_000,
        "promotion keeps the entry's expiry"
    );
    let again = c.get("n", "k").await.unwrap().unwrap();
    assert_eq!(again.tier, Tier::Memory, "promoted");
    // From Redis into a fresh instance: promoted into its memory and disk, same expiry.
    let other_dir = tempfile::tempdir().unwrap();
    let c2 = s.open(s.config_other(&other_dir)).await;
    let hit = c2.get("n", "k").await.unwrap().unwrap();
    assert_eq!((hit.tier, hit.expires_ms), (Tier::Redis, T0 + 10_000));
    let e = c2
        .peek(Tier::Disk, "n", "k")
        .await
        .expect("promoted to disk");
    assert_eq!(e.meta.expires_ms, T0 + 10_000);
    s.clock.advance(10_000);
    assert_eq!(c2.get("n", "k").await.unwrap(), None);
    assert_eq!(c.get("n", "k").await.unwrap(), None);
}

#[tokio::test]
async fn a_tag_removes_every_entry_carrying_it_in_every_tier() {
    let s = Setup::new();
    let c = s.open(s.config(true)).await;
    let o = |tags: &[&str]| opts(60_000, tags, &[]);
    c.set("n", "a", b("1"), &o(&["user:1", "feed"]))
        .await
        .unwrap();
    c.set("n", "b", b("2"), &o(&["user:1"])).await.unwrap();
    c.set("n", "c", b("3"), &o(&["user:2"])).await.unwrap();
    c.set("other", "a", b("4"), &o(&["user:1"])).await.unwrap();
    let removed = c.invalidate("n", &[], &["user:1".into()]).await.unwrap();
    assert_eq!(removed, 2);
    for k in ["a", "b"] {
        assert_eq!(in_tiers(&c, "n", k).await, vec![], "{k} gone everywhere");
        assert_eq!(c.get("n", k).await.unwrap(), None);
    }
    assert_eq!(in_tiers(&c, "n", "c").await, Tier::ALL.to_vec());
    assert_eq!(
        in_tiers(&c, "other", "a").await,
        Tier::ALL.to_vec(),
        "namespaces apart"
    );
    assert_eq!(c.invalidate("n", &[], &["user:1".into()]).await.unwrap(), 0);
    let st = c.stats();
    assert_eq!(
        (
            st.memory.invalidations,
            st.disk.invalidations,
            st.redis.invalidations
        ),
        (2, 2, 2)
    );
}

#[tokio::test]
async fn invalidating_a_key_cascades_to_dependents_through_cycles() {
    let s = Setup::new();
    let c = s.open(s.config(true)).await;
    let o = |deps: &[&str]| opts(60_000, &[], deps);
    // file -> ast -> index -> report; report <-> summary is a cycle; "other" stands apart.
    c.set("n", "file", b("f"), &o(&[])).await.unwrap();
    c.set("n", "ast", b("a"), &o(&["file"])).await.unwrap();
    c.set("n", "index", b("i"), &o(&["ast"])).await.unwrap();
    c.set("n", "report", b("r"), &o(&["index", "summary"]))
        .await
        .unwrap();
    c.set("n", "summary", b("s"), &o(&["report"]))
        .await
        .unwrap();
    c.set("n", "other", b("o"), &o(&[])).await.unwrap();
    let removed = c.delete("n", "ast").await.unwrap();
    assert_eq!(removed, 4, "ast, index, report, summary");
    for k in ["ast", "index", "report", "summary"] {
        assert_eq!(in_tiers(&c, "n", k).await, vec![], "{k}");
    }
    for k in ["file", "other"] {
        assert_eq!(in_tiers(&c, "n", k).await, Tier::ALL.to_vec(), "{k}");
    }
    // The same cascade reaches an instance that only got the entries through Redis.
    let other_dir = tempfile::tempdir().unwrap();
    let c2 = s.open(s.config_other(&other_dir)).await;
    c.set("n", "ast", b("a2"), &o(&["file"])).await.unwrap();
    c.set("n", "index", b("i2"), &o(&["ast"])).await.unwrap();
    for k in ["ast", "index"] {
        assert_eq!(c2.get("n", k).await.unwrap().unwrap().tier, Tier::Redis);
    }
    assert_eq!(c.delete("n", "file").await.unwrap(), 3);
    wait_until(
        "dependents gone on the other instance",
        Duration::from_millis(500),
        || futures::executor::block_on(c2.peek(Tier::Memory, "n", "index")).is_none(),
    )
    .await;
    for k in ["file", "ast", "index"] {
        assert_eq!(c2.get("n", k).await.unwrap(), None, "{k}");
    }
}

#[tokio::test]
async fn a_version_bump_retires_the_namespace_and_survives_restart() {
    let s = Setup::new();
    let c = s.open(s.config(true)).await;
    for k in ["a", "b", "c"] {
        c.set("n", k, b(k), &opts(60_000, &[], &[])).await.unwrap();
    }
    c.set("keep", "a", b("x"), &opts(60_000, &[], &[]))
        .await
        .unwrap();
    let v = c.bump("n").await.unwrap();
    assert!(v >= 1);
    for k in ["a", "b", "c"] {
        assert_eq!(c.get("n", k).await.unwrap(), None, "{k} retired");
    }
    assert!(c.get("keep", "a").await.unwrap().is_some());
    c.set("n", "a", b("new"), &opts(60_000, &[], &[]))
        .await
        .unwrap();
    drop(c);
    // Restart without Redis: the disk alone must still know the bump.
    let c = s.open(s.config(false)).await;
    assert_eq!(c.version("n"), v);
    assert_eq!(c.get("n", "a").await.unwrap().unwrap().value, b("new"));
    assert_eq!(c.get("n", "b").await.unwrap(), None);
    // Another instance learns the bump from Redis.
    let other_dir = tempfile::tempdir().unwrap();
    let c2 = s.open(s.config_other(&other_dir)).await;
    assert_eq!(c2.version("n"), v);
}

#[tokio::test]
async fn the_disk_tier_survives_a_restart_and_prunes_to_size() {
    let s = Setup::new();
    let config = CacheConfig {
        disk_max_bytes: 64 << 10,
        ..s.config(false)
    };
    let c = s.open(config.clone()).await;
    let value = Bytes::from(vec![7u8; 1000]);
    for i in 0..40 {
        c.set(
            "n",
            &format!("k{i}"),
            value.clone(),
            &opts(60_000, &["t"], &[]),
        )
        .await
        .unwrap();
    }
    drop(c);
    let c = s.open(config.clone()).await;
    let st = c.stats();
    assert_eq!(st.disk.entries, Some(40));
    assert_eq!(st.memory.entries, Some(0));
    // Use the last ten: they become the most recently used.
    for i in 30..40 {
        let hit = c.get("n", &format!("k{i}")).await.unwrap().unwrap();
        assert_eq!((hit.tier, hit.value.len()), (Tier::Disk, 1000));
    }
    let report = c.prune(Some(12_000), None).await.unwrap();
    assert!(report.bytes_left <= 12_000, "{report:?}");
    assert_eq!(report.files + report.files_left, 40);
    for i in 30..40 {
        assert!(
            c.peek(Tier::Disk, "n", &format!("k{i}")).await.is_some(),
            "k{i} kept"
        );
    }
    assert!(
        c.peek(Tier::Disk, "n", "k0").await.is_none(),
        "least recently used went"
    );
    // The tag index was rebuilt from the files: a tag reaches restarted entries.
    let removed = c.invalidate("n", &[], &["t".into()]).await.unwrap();
    assert_eq!(removed, report.files_left);
    // Pruned by age.
    c.set("n", "old", value.clone(), &opts(600_000, &[], &[]))
        .await
        .unwrap();
    s.clock.advance(120_000);
    c.set("n", "new", value, &opts(600_000, &[], &[]))
        .await
        .unwrap();
    let report = c.prune(None, Some(60_000)).await.unwrap();
    assert_eq!((report.files, report.files_left), (1, 1));
}

#[tokio::test]
async fn the_disk_tier_stays_within_its_budget() {
    let s = Setup::new();
    let config = CacheConfig {
        disk_max_bytes: 20_000,
        memory_max_bytes: 1 << 20,
        ..s.config(false)
    };
    let c = s.open(config).await;
    for i in 0..100 {
        c.set(
            "n",
            &format!("k{i}"),
            Bytes::from(vec![1u8; 1000]),
            &opts(60_000, &["t"], &[]),
        )
        .await
        .unwrap();
    }
    let st = c.stats();
    assert!(st.disk.bytes.unwrap() <= 20_000, "{st:?}");
    assert!(st.disk.evictions >= 80, "{st:?}");
    // Memory follows disk, so tag invalidation still reaches everything held.
    assert_eq!(st.memory.entries, st.disk.entries);
    let n = st.disk.entries.unwrap();
    assert_eq!(c.invalidate("n", &[], &["t".into()]).await.unwrap(), n);
    let files = walk(s.dir.path());
    assert!(
        files.iter().all(|p| !p.contains("/v1/tmp/")),
        "no temp files left: {files:?}"
    );
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_of_100_callers_runs_one_computation() {
    let s = Setup::new();
    let c = s.open(s.config(true)).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, runs, mut gate) = (c.clone(), runs.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_compute("n", "hot", opts(60_000, &[], &[]), move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.wait_for(|open| *open).await?;
                Ok::<_, anyhow::Error>(b("computed"))
            })
            .await
        }));
    }
    // Every caller but the computing one is waiting on it before the computation ends.
    wait_until("99 callers coalesced", Duration::from_secs(10), || {
        c.stats().coalesced == 99
    })
    .await;
    release.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), b("computed"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().computations, 1);
    assert_eq!(in_tiers(&c, "n", "hot").await, Tier::ALL.to_vec());

    // An error reaches every waiter, and nothing is cached.
    let (release, gate) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, mut gate) = (c.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_compute("n", "fails", opts(60_000, &[], &[]), move || async move {
                gate.wait_for(|open| *open).await?;
                anyhow::bail!("the model timed out")
            })
            .await
        }));
    }
    wait_until("coalesced", Duration::from_secs(10), || {
        c.stats().coalesced == 198
    })
    .await;
    release.send(true).unwrap();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(matches!(&err, CacheError::Compute(e) if e.to_string().contains("timed out")));
    }
    assert_eq!(c.get("n", "fails").await.unwrap(), None);
    assert_eq!(c.stats().computations, 2, "one per flight");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let s = Setup::new();
    let config = CacheConfig {
        namespaces: vec!["scores".into()],
        max_value_bytes: 1000,
        ..s.config(true)
    };
    let c = s.open(config).await;
    let ok = opts(1000, &[], &[]);
    let long = "k".repeat(2000);
    let cases: Vec<(&str, &str, Bytes, SetOptions)> = vec![
        ("scores", "", b("v"), ok.clone()),
        ("scores", &long, b("v"), ok.clone()),
        ("scores", "k", Bytes::from(vec![0u8; 1001]), ok.clone()),
        ("scores", "k", b("v"), opts(0, &[], &[])),
        ("scores", "k", b("v"), opts(u64::MAX, &[], &[])),
        ("other", "k", b("v"), ok.clone()),
        ("bad ns", "k", b("v"), ok.clone()),
        ("scores", "k", b("v"), opts(1000, &[""], &[])),
        ("scores", "k", b("v"), opts(1000, &[], &["a\nb"])),
    ];
    for (ns, key, value, o) in cases {
        let r = c.set(ns, key, value, &o).await;
        assert!(r.is_err(), "{ns:?} {key:.20?} {o:?} accepted");
    }
    assert!(matches!(
        c.get("other", "k").await,
        Err(CacheError::UnknownNamespace(_))
    ));
    assert!(c.invalidate("scores", &["".into()], &[]).await.is_err());
    assert!(c.bump("other").await.is_err());
    let st = c.stats();
    assert_eq!(
        (st.memory.writes, st.disk.writes, st.redis.writes),
        (0, 0, 0)
    );
    assert_eq!(c.version("other"), 0);
}

/// A Redis server of the test's own, on a free port, that it can kill and restart.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis { port, child: None };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_memory_and_disk_and_recovers() {
    let s = Setup::new();
    let mut redis = OwnRedis::start();
    let config = CacheConfig {
        redis_url: Some(redis.url()),
        redis_timeout_ms: 200,
        ..s.config(true)
    };
    let c = s.open(config).await;
    c.set("n", "before", b("v"), &opts(60_000, &[], &[]))
        .await
        .unwrap();
    assert_eq!(in_tiers(&c, "n", "before").await, Tier::ALL.to_vec());
    redis.kill();
    // Every call goes on working while Redis is gone, from memory and disk.
    for i in 0..50 {
        let k = format!("during{i}");
        c.set("n", &k, b("w"), &opts(60_000, &["t"], &[]))
            .await
            .unwrap();
        assert_eq!(c.get("n", &k).await.unwrap().unwrap().value, b("w"));
        assert!(c.get("n", "missing").await.unwrap().is_none());
    }
    assert!(!c.redis_up());
    assert_eq!(c.invalidate("n", &[], &["t".into()]).await.unwrap(), 50);
    c.bump("elsewhere").await.unwrap();
    let st = c.stats();
    assert_eq!(
        st.redis_outages, 1,
        "one outage, counted (and logged) once: {st:?}"
    );
    redis.restart();
    wait_until("redis tier back", Duration::from_secs(10), || c.redis_up()).await;
    // Redis came back empty: the instance cannot know what it missed, so it retired its
    // local tiers, and it wrote its pending bump back.
    assert!(c.stats().resyncs >= 1);
    assert_eq!(c.get("n", "before").await.unwrap(), None);
    c.set("n", "after", b("x"), &opts(60_000, &[], &[]))
        .await
        .unwrap();
    assert_eq!(in_tiers(&c, "n", "after").await, Tier::ALL.to_vec());
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v: Option<u64> = redis::cmd("HGET")
        .arg(format!("{}versions", s.prefix))
        .arg("elsewhere")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, Some(1), "the bump made during the outage reached Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_made_while_redis_stalls_are_replayed() {
    let s = Setup::new();
    let redis = OwnRedis::start();
    let config = CacheConfig {
        redis_url: Some(redis.url()),
        redis_timeout_ms: 100,
        ..s.config(true)
    };
    let c = s.open(config.clone()).await;
    c.set("n", "k", b("v"), &opts(60_000, &["t"], &[]))
        .await
        .unwrap();
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Stall Redis (it keeps its data): writes time out, so the tier goes down.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(c.invalidate("n", &[], &["t".into()]).await.unwrap(), 1);
    assert!(!c.redis_up());
    wait_until("redis tier back", Duration::from_secs(10), || c.redis_up()).await;
    let other_dir = tempfile::tempdir().unwrap();
    let c2 = s
        .open(CacheConfig {
            dir: Some(other_dir.path().to_path_buf()),
            ..config
        })
        .await;
    assert_eq!(c2.get("n", "k").await.unwrap(), None, "replayed into Redis");
}

/// Regression (issue 16): two servers on one machine shared `~/.cache/weir` by default, with
/// no lock, so pruning through one deleted the other's entries. A folder is now held by one
/// process at a time, and a second one is refused with a reason that says what to do.
#[tokio::test]
async fn a_disk_folder_is_held_by_one_cache_at_a_time() {
    let s = Setup::new();
    let first = s.open(s.config(false)).await;
    let second = Cache::open(s.config(false)).await;
    let Err(err) = second else {
        panic!("a second cache on the same folder is refused");
    };
    let msg = err.to_string();
    assert!(msg.contains("in use by another process"), "{msg}");
    assert!(
        msg.contains(&std::process::id().to_string()),
        "names the holder: {msg}"
    );
    drop(first);
    // Once the first is gone, the folder can be opened again. (Another test of this binary
    // forking a child can hold a copy of the lock's descriptor until the child execs, a few
    // microseconds: allow that window, nothing longer.)
    let start = Instant::now();
    loop {
        match Cache::open(s.config(false)).await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(2), "{e}"),
        }
        tokio::task::yield_now().await;
    }
}
