//! `cargo bench -p weir-cache --bench cache`: the memory tier's overhead over the bare
//! crate under it (moka), and hit ratios on a Zipf(0.9) trace against a plain LRU of the
//! same byte budget. Prints tables; BENCHMARKS.md records them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, non_snake_case)]

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::Instant;
use weir_cache::{Cache, CacheConfig, SetOptions};

fn memory_only(max_bytes: u64) -> CacheConfig {
    CacheConfig {
        memory_max_bytes: max_bytes,
        disk_max_bytes: 0,
        redis_url: None,
        ..Default::default()
    }
}

fn l1_overhead(rt: &tokio::runtime::Runtime, keys_n: usize) {
    let KEYS = keys_n;
    const GETS: usize = 4_000_000;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i}:profile")).collect();
    let value = Bytes::from(vec![7u8; 100]);
    let order: Vec<usize> = {
        let mut r = rand::rngs::StdRng::seed_from_u64(1);
        (0..GETS).map(|_| r.random_range(0..KEYS)).collect()
    };

    let bare: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
        .max_capacity(256 << 20)
        .weigher(|k: &String, v: &Bytes| (k.len() + v.len()) as u32)
        .build();
    for k in &keys {
        bare.insert(k.clone(), value.clone());
    }
    let cache = rt.block_on(Cache::open(memory_only(256 << 20))).unwrap();
    rt.block_on(async {
        for k in &keys {
            cache
                .set("users", k, value.clone(), &SetOptions::default())
                .await
                .unwrap();
        }
    });

    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        for &i in &order {
            black_box(bare.get(keys[i].as_str()));
        }
        best.0 = best.0.min(t.elapsed().as_nanos() as f64 / GETS as f64);
        let t = Instant::now();
        rt.block_on(async {
            for &i in &order {
                black_box(cache.get("users", &keys[i]).await.unwrap());
            }
        });
        best.1 = best.1.min(t.elapsed().as_nanos() as f64 / GETS as f64);
    }
    println!(
        "## L1 get, in process, one thread ({KEYS} keys of 100 B, {GETS} random gets, best of 5, interleaved)\n"
    );
    println!("| | ns/get | gets/s |\n|---|---:|---:|");
    println!(
        "| moka::sync::Cache::get (bare) | {:.0} | {:.2} M |",
        best.0,
        1e3 / best.0
    );
    println!(
        "| weir_cache::Cache::get (memory tier) | {:.0} | {:.2} M |",
        best.1,
        1e3 / best.1
    );
    println!("\noverhead: {:.2}x the bare crate\n", best.1 / best.0);
}

/// Entry weight both caches charge: value, key, and the same fixed overhead.
fn weight(key: &str, size: usize) -> usize {
    size + key.len() + 8 + 160
}

fn zipf_hit_ratio(rt: &tokio::runtime::Runtime) {
    const KEYS: usize = 100_000;
    const REQUESTS: usize = 2_000_000;
    let mut r = rand::rngs::StdRng::seed_from_u64(7);
    let sizes: Vec<usize> = (0..KEYS).map(|_| r.random_range(200..4000)).collect();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let zipf = Zipf::new(KEYS as f64, 0.9).unwrap();
    let trace: Vec<usize> = (0..REQUESTS)
        .map(|_| zipf.sample(&mut r) as usize - 1)
        .collect();
    let total: usize = (0..KEYS).map(|i| weight(&keys[i], sizes[i])).sum();
    println!(
        "## Hit ratio on a Zipf(0.9) trace ({REQUESTS} requests over {KEYS} keys of 200-4000 B, \
         {} MiB in all; miss = compute and set)\n",
        total >> 20
    );
    println!(
        "| budget | plain LRU (lru crate) | weir memory tier (moka TinyLFU) |\n|---|---:|---:|"
    );
    for pct in [1usize, 5, 10, 25] {
        let budget = total * pct / 100;
        // Plain LRU bounded by the same bytes.
        let mut lru: lru::LruCache<usize, usize> =
            lru::LruCache::new(NonZeroUsize::new(KEYS).unwrap());
        let (mut used, mut hits) = (0usize, 0usize);
        for &k in &trace {
            if lru.get(&k).is_some() {
                hits += 1;
                continue;
            }
            let w = weight(&keys[k], sizes[k]);
            lru.put(k, w);
            used += w;
            while used > budget {
                let (_, w) = lru.pop_lru().unwrap();
                used -= w;
            }
        }
        let lru_ratio = hits as f64 / REQUESTS as f64;
        let cache = rt
            .block_on(Cache::open(memory_only(budget as u64)))
            .unwrap();
        let values: Vec<Bytes> = sizes.iter().map(|&s| Bytes::from(vec![1u8; s])).collect();
        let hits = rt.block_on(async {
            let mut hits = 0usize;
            for &k in &trace {
                if cache.get("z", &keys[k]).await.unwrap().is_some() {
                    hits += 1;
                } else {
                    cache
                        .set("z", &keys[k], values[k].clone(), &SetOptions::default())
                        .await
                        .unwrap();
                }
            }
            hits
        });
        let ours = hits as f64 / REQUESTS as f64;
        println!(
            "| {pct} % ({} MiB) | {:.1} % | {:.1} % |",
            budget >> 20,
            lru_ratio * 100.0,
            ours * 100.0
        );
    }
    println!();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench -p weir-cache --bench cache -- l1` (or `zipf`) runs one part.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| o == "l1") {
        l1_overhead(&rt, 1_000);
        l1_overhead(&rt, 100_000);
    }
    if only.as_deref().is_none_or(|o| o == "zipf") {
        zipf_hit_ratio(&rt);
    }
}
