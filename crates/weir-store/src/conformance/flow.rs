//! Flow control: every control, with the clock moved by the case.

use super::*;
use weir_core::{BreakerConfig, Error, JobState, RateLimit};

async fn fail_all<S: Store>(s: &S, got: &[FetchedJob]) {
    for f in got {
        fail(s, f, true).await;
    }
}

pub async fn rate_limit_hands_out_at_most_limit_plus_burst_per_second<S: Store>(
    s: &S,
    c: &ManualClock,
) {
    configure(s, "q", |cfg| {
        cfg.rate_limit = Some(RateLimit {
            limit: 50,
            period_ms: 1_000,
            burst: 10,
        })
    })
    .await;
    put(s, (0..2_000).map(|n| job("q", n)).collect()).await;
    // The burst goes at once; then the fetcher is told when the next token is due.
    let first = fetch(s, &["q"], 1_000).await;
    assert_eq!(first.len(), 10, "the burst");
    let due = s.job_fetch_next_token(&["q".to_string()]).await.unwrap();
    assert_eq!(due, Some(T0 + 20), "one token every 20 ms at 50/s");
    for f in &first {
        ack(s, f, None).await;
    }
    // Fetch greedily every 7 ms for 10 simulated seconds; count what starts in each second.
    let mut per_second = [0usize; 10];
    for step in 0..(10_000 / 7) {
        let got = fetch(s, &["q"], 1_000).await;
        per_second[(step * 7 / 1_000) as usize] += got.len();
        for f in &got {
            ack(s, f, None).await;
        }
        c.advance(7);
    }
    for (sec, n) in per_second.iter().enumerate() {
        assert!(
            *n <= 60,
            "second {sec}: {n} jobs started, limit 50 + burst 10"
        );
    }
    let total: usize = per_second.iter().sum();
    assert!(
        (490..=500).contains(&total),
        "10 s at 50/s after the burst, got {total}"
    );
}

pub async fn concurrency_limit_holds_across_fetches<S: Store>(s: &S, _c: &ManualClock) {
    configure(s, "q", |cfg| cfg.concurrency = 2).await;
    put(s, (0..10).map(|n| job("q", n)).collect()).await;
    let first = fetch(s, &["q"], 10).await;
    assert_eq!(first.len(), 2);
    assert!(
        fetch(s, &["q"], 10).await.is_empty(),
        "a second worker gets nothing"
    );
    ack(s, &first[0], None).await;
    let next = fetch(s, &["q"], 10).await;
    assert_eq!(next.len(), 1, "one slot freed, one job");
    let st = s.queue_stats("q").await.unwrap().unwrap();
    assert_eq!(st.counts["active"], 2);
    // A fail frees the slot too.
    fail(s, &next[0], true).await;
    assert_eq!(fetch(s, &["q"], 10).await.len(), 1);
}

pub async fn breaker_opens_probes_and_closes<S: Store>(s: &S, c: &ManualClock) {
    configure(s, "q", |cfg| {
        cfg.breaker = Some(BreakerConfig {
            failure_rate: 0.0,
            consecutive_failures: 3,
            cooldown_ms: 10_000,
            half_open_probes: 2,
            ..BreakerConfig::default()
        })
    })
    .await;
    let ids = put(s, (0..20).map(|n| job("q", n)).collect()).await;
    let got = fetch(s, &["q"], 3).await;
    fail_all(s, &got).await;
    let st = s.queue_stats("q").await.unwrap().unwrap();
    assert_eq!(st.breaker, "open");
    // Open: nothing is handed out and no attempt is burned.
    c.advance(5_000);
    assert!(fetch(s, &["q"], 10).await.is_empty());
    let untouched = s.job_get(ids[10]).await.unwrap().unwrap();
    assert_eq!((untouched.state, untouched.attempt), (JobState::Waiting, 0));
    // Half open after the cool-down: exactly the probe budget.
    c.advance(5_000);
    let probes = fetch(s, &["q"], 10).await;
    assert_eq!(probes.len(), 2);
    assert!(
        fetch(s, &["q"], 10).await.is_empty(),
        "no more than the probes"
    );
    assert_eq!(
        s.queue_stats("q").await.unwrap().unwrap().breaker,
        "half_open"
    );
    // A failing probe opens it again.
    fail(s, &probes[0], true).await;
    assert_eq!(s.queue_stats("q").await.unwrap().unwrap().breaker, "open");
    c.advance(10_000);
    let probes = fetch(s, &["q"], 10).await;
    assert_eq!(probes.len(), 2);
    for p in &probes {
        ack(s, p, None).await;
    }
    assert_eq!(s.queue_stats("q").await.unwrap().unwrap().breaker, "closed");
    // Everything else: 20 jobs less the 2 completed probes and the first half-open round's
    // second probe, still active under its lease (the failed ones are due again by now).
    assert_eq!(fetch(s, &["q"], 100).await.len(), 17, "all the rest");
}

pub async fn breaker_opens_on_failure_rate_over_min_calls<S: Store>(s: &S, c: &ManualClock) {
    configure(s, "q", |cfg| {
        cfg.breaker = Some(BreakerConfig {
            failure_rate: 0.5,
            window_ms: 10_000,
            min_calls: 10,
            ..BreakerConfig::default()
        })
    })
    .await;
    put(s, (0..30).map(|n| job("q", n)).collect()).await;
    // 4 successes and 5 failures: 9 calls, under min_calls: stays closed.
    let got = fetch(s, &["q"], 9).await;
    for (i, f) in got.iter().enumerate() {
        if i < 4 {
            ack(s, f, None).await;
        } else {
            fail(s, f, true).await;
        }
        c.advance(10);
    }
    assert_eq!(s.queue_stats("q").await.unwrap().unwrap().breaker, "closed");
    // The tenth call, a failure: 6 of 10 fail, over 50 %.
    let f = fetch(s, &["q"], 1).await;
    fail(s, &f[0], true).await;
    assert_eq!(s.queue_stats("q").await.unwrap().unwrap().breaker, "open");
}

pub async fn max_depth_sheds_load_and_changes_nothing<S: Store>(s: &S, _c: &ManualClock) {
    configure(s, "q", |cfg| cfg.max_depth = 3).await;
    put(s, vec![job("q", 1), job("q", 2)]).await;
    let before = s.queue_stats("q").await.unwrap().unwrap().counts;
    let r = s
        .job_insert_many(JobInsertManyParams {
            jobs: vec![job("q", 3), job("q", 4)],
        })
        .await;
    match r {
        Err(Error::Overloaded {
            depth,
            max_depth,
            retry_after_ms,
            ..
        }) => {
            assert_eq!((depth, max_depth), (2, 3));
            assert!((100..=60_000).contains(&retry_after_ms));
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(s.queue_stats("q").await.unwrap().unwrap().counts, before);
    put1(s, job("q", 3)).await;
    // Finishing work makes room again.
    let f = fetch(s, &["q"], 1).await;
    ack(s, &f[0], None).await;
    put1(s, job("q", 4)).await;
}

pub async fn weights_share_one_fetch<S: Store>(s: &S, _c: &ManualClock) {
    configure(s, "a", |cfg| cfg.weight = 3).await;
    configure(s, "b", |cfg| cfg.weight = 1).await;
    put(s, (0..100).map(|n| job("a", n)).collect()).await;
    put(s, (0..100).map(|n| job("b", n)).collect()).await;
    let got = fetch(s, &["b", "a"], 40).await;
    let from_a = got.iter().filter(|f| f.queue == "a").count();
    assert_eq!((from_a, got.len() - from_a), (30, 10));
    // When one queue runs dry the other takes the rest.
    let got = fetch(s, &["a", "b"], 200).await;
    assert_eq!(got.len(), 160);
}

pub async fn starvation_is_flagged_and_boosts_the_share<S: Store>(s: &S, c: &ManualClock) {
    configure(s, "busy", |cfg| cfg.weight = 1).await;
    configure(s, "low", |cfg| {
        cfg.weight = 1;
        cfg.starvation_ms = 5_000;
    })
    .await;
    put(s, (0..100).map(|n| job("busy", n)).collect()).await;
    put(s, (0..100).map(|n| job("low", n)).collect()).await;
    assert!(!s.queue_stats("low").await.unwrap().unwrap().starving);
    c.advance(6_000);
    s.maintenance_run().await.unwrap();
    assert!(s.queue_stats("low").await.unwrap().unwrap().starving);
    // Starving: its weight counts four times.
    let got = fetch(s, &["busy", "low"], 50).await;
    let low = got.iter().filter(|f| f.queue == "low").count();
    assert_eq!(low, 40);
    // Drained, it recovers at the next check.
    for f in fetch(s, &["low"], 100).await {
        ack(s, &f, None).await;
    }
    c.advance(1_000);
    s.maintenance_run().await.unwrap();
    assert!(!s.queue_stats("low").await.unwrap().unwrap().starving);
}

pub async fn advisor_recommends_workers_from_backlog_and_run_time<S: Store>(
    s: &S,
    c: &ManualClock,
) {
    configure(s, "q", |cfg| cfg.drain_window_ms = 10_000).await;
    put(s, (0..1_010).map(|n| job("q", n)).collect()).await;
    // Ten jobs that each run 500 ms.
    let got = fetch(s, &["q"], 10).await;
    c.advance(500);
    for f in &got {
        ack(s, f, None).await;
    }
    let st = s.queue_stats("q").await.unwrap().unwrap();
    // 1000 waiting × 0.5 s / 10 s = 50, plus arrivals (1010 in the last second) × 0.5 s.
    assert!(st.advice.recommended_workers >= 50, "{:?}", st.advice);
    assert!(
        st.advice.reason.contains("1000 waiting jobs"),
        "{}",
        st.advice.reason
    );
}

pub async fn group_concurrency_limits_each_key<S: Store>(s: &S, _c: &ManualClock) {
    configure(s, "q", |cfg| cfg.group_concurrency = 2).await;
    let grouped = |g: &str, n| NewJob {
        group: Some(g.into()),
        ..job("q", n)
    };
    put(s, (0..5).map(|n| grouped("alice", n)).collect()).await;
    put(s, (5..8).map(|n| grouped("bob", n)).collect()).await;
    let got = fetch(s, &["q"], 100).await;
    let count = |got: &[FetchedJob], lo: u64, hi: u64| {
        got.iter().filter(|f| (lo..hi).contains(&n_of(f))).count()
    };
    assert_eq!(
        (count(&got, 0, 5), count(&got, 5, 8)),
        (2, 2),
        "two per key"
    );
    // In enqueue order within a key.
    let mut alice: Vec<u64> = got.iter().map(n_of).filter(|n| *n < 5).collect();
    alice.sort_unstable();
    assert_eq!(alice, vec![0, 1]);
    assert!(
        fetch(s, &["q"], 100).await.is_empty(),
        "no third job of a key"
    );
    let a0 = got.iter().find(|f| n_of(f) == 0).unwrap();
    ack(s, a0, None).await;
    let next = fetch(s, &["q"], 100).await;
    assert_eq!(next.iter().map(n_of).collect::<Vec<_>>(), vec![2]);
    // Raising the limit frees more at once; 1 makes the key ordered again.
    configure(s, "q", |cfg| cfg.group_concurrency = 4).await;
    assert_eq!(fetch(s, &["q"], 100).await.len(), 2 + 1, "alice 3+4, bob 7");
}

pub async fn group_rate_limit_holds_per_key<S: Store>(s: &S, c: &ManualClock) {
    configure(s, "q", |cfg| {
        cfg.group_concurrency = 10;
        cfg.group_rate_limit = Some(RateLimit {
            limit: 2,
            period_ms: 1_000,
            burst: 1,
        });
    })
    .await;
    let grouped = |g: &str, n| NewJob {
        group: Some(g.into()),
        ..job("q", n)
    };
    put(
        s,
        (0..40)
            .map(|n| grouped(if n % 2 == 0 { "alice" } else { "bob" }, n))
            .collect(),
    )
    .await;
    put(s, (100..110).map(|n| job("q", n)).collect()).await;
    // Every 10 ms for 5 simulated seconds, fetch everything and ack at once.
    let mut per_key_second = std::collections::HashMap::<(u64, u64), usize>::new();
    let mut ungrouped = 0;
    for step in 0..500u64 {
        for f in fetch(s, &["q"], 100).await {
            let n = n_of(&f);
            if n >= 100 {
                ungrouped += 1;
            } else {
                *per_key_second.entry((n % 2, step / 100)).or_default() += 1;
            }
            ack(s, &f, None).await;
        }
        c.advance(10);
    }
    assert_eq!(ungrouped, 10, "jobs without a key are not limited");
    for ((key, sec), n) in &per_key_second {
        assert!(
            *n <= 3,
            "key {key}, second {sec}: {n} starts (limit 2 + burst 1)"
        );
    }
    let total: usize = per_key_second.values().sum();
    // 2/s per key for 5 s plus the burst, for two keys: about 22.
    assert!((18..=24).contains(&total), "{total}");
}
