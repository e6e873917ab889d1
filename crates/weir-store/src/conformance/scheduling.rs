//! Cases: what is handed out when — delays, priorities, order, aging, unique keys, ordered
//! groups, pausing — plus queue statistics, retention and listing.

use super::*;
use weir_core::{JobFilter, JobState, Order, Retention};

pub async fn delayed_and_scheduled_jobs_wait<S: Store>(s: &S, c: &ManualClock) {
    let a = put1(
        s,
        NewJob {
            delay_ms: Some(5_000),
            ..job("q", 1)
        },
    )
    .await;
    let b = put1(
        s,
        NewJob {
            run_at_ms: Some(T0 + 2_000),
            ..job("q", 2)
        },
    )
    .await;
    assert_eq!(state(s, a).await, JobState::Scheduled);
    assert!(fetch(s, &["q"], 10).await.is_empty());
    c.advance(1_999);
    assert!(
        fetch(s, &["q"], 10).await.is_empty(),
        "ran before its run_at"
    );
    c.advance(1);
    let got = fetch(s, &["q"], 10).await;
    assert_eq!(got.iter().map(|f| f.id).collect::<Vec<_>>(), vec![b]);
    c.advance(3_000);
    assert_eq!(fetch(s, &["q"], 10).await[0].id, a);
    // A run_at in the past runs now.
    let p = put1(
        s,
        NewJob {
            run_at_ms: Some(T0 - 10),
            ..job("q", 3)
        },
    )
    .await;
    assert_eq!(state(s, p).await, JobState::Waiting);
}

pub async fn priority_then_fifo<S: Store>(s: &S, _c: &ManualClock) {
    let mk = |n, p| NewJob {
        priority: p,
        ..job("q", n)
    };
    put(
        s,
        vec![mk(1, 0), mk(2, 5), mk(3, 1), mk(4, 5), mk(5, -2), mk(6, 0)],
    )
    .await;
    let order: Vec<u64> = fetch(s, &["q"], 10).await.iter().map(n_of).collect();
    assert_eq!(order, vec![2, 4, 3, 1, 6, 5]);
}

pub async fn smallest_cost_first<S: Store>(s: &S, _c: &ManualClock) {
    configure(s, "plans", |c| c.order = Order::SmallestCost).await;
    let mk = |n, cost, p| NewJob {
        cost,
        priority: p,
        ..job("plans", n)
    };
    put(
        s,
        vec![
            mk(1, 3_000, 0),
            mk(2, 10, 0),
            mk(3, 500, 0),
            mk(4, 10, 0),
            mk(5, 9_000, 1),
        ],
    )
    .await;
    let order: Vec<u64> = fetch(s, &["plans"], 10).await.iter().map(n_of).collect();
    assert_eq!(
        order,
        vec![5, 2, 4, 3, 1],
        "priority first, then smallest cost, then age"
    );
}

pub async fn aging_lifts_old_low_priority_work<S: Store>(s: &S, c: &ManualClock) {
    configure(s, "q", |cfg| cfg.aging_ms = 1_000).await;
    put1(
        s,
        NewJob {
            priority: 0,
            ..job("q", 1)
        },
    )
    .await;
    c.advance(3_000);
    // Three aging boundaries passed: the old job now counts as priority 3.
    put1(
        s,
        NewJob {
            priority: 5,
            ..job("q", 2)
        },
    )
    .await;
    put1(
        s,
        NewJob {
            priority: 2,
            ..job("q", 3)
        },
    )
    .await;
    let order: Vec<u64> = fetch(s, &["q"], 10).await.iter().map(n_of).collect();
    assert_eq!(order, vec![2, 1, 3]);
    // With aging off, priority alone decides.
    configure(s, "p", |cfg| cfg.aging_ms = 0).await;
    put1(
        s,
        NewJob {
            priority: 0,
            ..job("p", 1)
        },
    )
    .await;
    c.advance(1_000_000);
    put1(
        s,
        NewJob {
            priority: 1,
            ..job("p", 2)
        },
    )
    .await;
    let order: Vec<u64> = fetch(s, &["p"], 10).await.iter().map(n_of).collect();
    assert_eq!(order, vec![2, 1]);
}

pub async fn unique_keys_deduplicate_while_live<S: Store>(s: &S, c: &ManualClock) {
    let u = |n| NewJob {
        unique_key: Some("pr-42".into()),
        ..job("q", n)
    };
    let ids = put(s, vec![u(1), u(2)]).await;
    assert_eq!(ids[0], ids[1], "same key in one batch");
    assert_eq!(put1(s, u(3)).await, ids[0]);
    // The same key in another queue is another job.
    let other = put1(
        s,
        NewJob {
            unique_key: Some("pr-42".into()),
            ..job("r", 1)
        },
    )
    .await;
    assert_ne!(other, ids[0]);
    let f = fetch(s, &["q"], 10).await;
    assert_eq!(f.len(), 1);
    assert_eq!(put1(s, u(4)).await, ids[0], "an active job's key is live");
    ack(s, &f[0], None).await;
    let fresh = put1(s, u(5)).await;
    assert_ne!(
        fresh, ids[0],
        "a finished job's key is free without a window"
    );

    // With a window, the key deduplicates until the window ends, even after completion.
    let w = |n| NewJob {
        unique_key: Some("daily".into()),
        unique_window_ms: Some(10_000),
        ..job("w", n)
    };
    let first = put1(s, w(1)).await;
    let f = fetch(s, &["w"], 1).await.remove(0);
    ack(s, &f, None).await;
    c.advance(9_999);
    assert_eq!(put1(s, w(2)).await, first);
    c.advance(1);
    assert_ne!(put1(s, w(3)).await, first);
}

pub async fn ordered_groups_run_one_at_a_time_in_order<S: Store>(s: &S, c: &ManualClock) {
    let g = |n, grp: &str| NewJob {
        group: Some(grp.into()),
        backoff: Some(weir_core::Backoff {
            base_ms: 1_000,
            cap_ms: 1_000,
        }),
        ..job("posts", n)
    };
    put(
        s,
        vec![
            g(1, "alice"),
            g(2, "alice"),
            g(3, "alice"),
            g(10, "bob"),
            job("posts", 99),
        ],
    )
    .await;
    let got = fetch(s, &["posts"], 10).await;
    let mut ns: Vec<u64> = got.iter().map(n_of).collect();
    ns.sort();
    assert_eq!(
        ns,
        vec![1, 10, 99],
        "one job per group, ungrouped jobs unaffected"
    );
    assert!(
        fetch(s, &["posts"], 10).await.is_empty(),
        "a group had two active jobs"
    );
    let a1 = got.iter().find(|f| n_of(f) == 1).unwrap();
    ack(s, a1, None).await;
    // No head-of-line blocking: bob's new job runs while alice's next waits its turn.
    put1(s, g(11, "bob")).await;
    let next = fetch(s, &["posts"], 10).await;
    assert_eq!(next.iter().map(n_of).collect::<Vec<_>>(), vec![2]);
    // A failed attempt keeps the group's order: 3 waits until 2 is done.
    fail(s, &next[0], true).await;
    assert!(
        fetch(s, &["posts"], 10).await.is_empty(),
        "a later group job overtook a retrying one"
    );
    c.advance(1_000);
    let again = fetch(s, &["posts"], 10).await;
    assert_eq!(again.iter().map(n_of).collect::<Vec<_>>(), vec![2]);
    ack(s, &again[0], None).await;
    let bob = got.iter().find(|f| n_of(f) == 10).unwrap();
    ack(s, bob, None).await;
    let mut rest: Vec<u64> = fetch(s, &["posts"], 10).await.iter().map(n_of).collect();
    rest.sort();
    assert_eq!(rest, vec![3, 11]);
}

pub async fn fetch_takes_queues_in_the_order_given<S: Store>(s: &S, _c: &ManualClock) {
    put(s, vec![job("low", 1), job("low", 2), job("high", 3)]).await;
    let got: Vec<_> = fetch(s, &["high", "low"], 2)
        .await
        .iter()
        .map(|f| (f.queue.clone(), n_of(f)))
        .collect();
    assert_eq!(got, vec![("high".to_string(), 3), ("low".to_string(), 1)]);
}

pub async fn paused_queue_hands_out_nothing<S: Store>(s: &S, _c: &ManualClock) {
    put1(s, job("q", 1)).await;
    configure(s, "q", |c| c.paused = true).await;
    assert!(fetch(s, &["q"], 10).await.is_empty());
    put1(s, job("q", 2)).await; // a paused queue still accepts work
    configure(s, "q", |c| c.paused = false).await;
    assert_eq!(fetch(s, &["q"], 10).await.len(), 2);
}

pub async fn queue_stats_count_states<S: Store>(s: &S, c: &ManualClock) {
    put(
        s,
        vec![
            job("q", 1),
            job("q", 2),
            job("q", 3),
            NewJob {
                delay_ms: Some(60_000),
                ..job("q", 4)
            },
        ],
    )
    .await;
    c.advance(1_500);
    let f = fetch(s, &["q"], 2).await;
    ack(s, &f[0], None).await;
    let st = s.queue_stats("q").await.unwrap().unwrap();
    let count = |k: &str| st.counts[k];
    assert_eq!(
        (
            count("waiting"),
            count("active"),
            count("completed"),
            count("scheduled")
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(st.oldest_waiting_ms, 1_500);
    assert!(s.queue_stats("nope").await.unwrap().is_none());
    assert_eq!(s.queue_list().await.unwrap(), vec!["q".to_string()]);
}

pub async fn retention_deletes_and_aggregates_remain<S: Store>(s: &S, c: &ManualClock) {
    configure(s, "q", |cfg| {
        cfg.retention = Retention {
            completed_ms: 10_000,
            completed_max: 2,
            dead_ms: 5_000,
            dead_max: 100,
        }
    })
    .await;
    let ids = put(s, (0..6).map(|n| job("q", n)).collect()).await;
    let got = fetch(s, &["q"], 6).await;
    for f in &got[..5] {
        c.advance(10);
        ack(s, f, None).await;
    }
    fail(s, &got[5], false).await;
    s.maintenance_run().await.unwrap();
    let alive: Vec<bool> = exist(s, &ids).await;
    assert_eq!(
        alive,
        vec![false, false, false, true, true, true],
        "count limit keeps the newest 2"
    );
    c.advance(5_000);
    s.maintenance_run().await.unwrap();
    assert!(
        s.job_get(ids[5]).await.unwrap().is_none(),
        "dead job outlived dead_ms"
    );
    c.advance(5_000);
    let report = s.maintenance_run().await.unwrap();
    assert_eq!(report.deleted, 2);
    assert!(s
        .job_list(JobFilter::default())
        .await
        .unwrap()
        .jobs
        .is_empty());
    let aggs = s
        .aggregate_list(AggregateListParams {
            queue: Some("q".into()),
            from_ms: 0,
            to_ms: u64::MAX,
        })
        .await
        .unwrap();
    let total = aggs
        .iter()
        .fold(weir_core::Aggregate::default(), |mut a, r| {
            a.merge(&r.counts);
            a
        });
    assert_eq!(
        (total.enqueued, total.completed, total.dead, total.started),
        (6, 5, 1, 6)
    );
    assert!(total.run_ms_max >= 10);
    let st = s.queue_stats("q").await.unwrap().unwrap();
    assert_eq!(st.counts["completed"] + st.counts["dead"], 0);
}

/// `dead_max` counts dead and cancelled jobs together and deletes the oldest of both first,
/// whichever state each is in; completed jobs are neither counted nor deleted by it.
pub async fn retention_by_count_takes_the_oldest_dead_and_cancelled_jobs_together<S: Store>(
    s: &S,
    c: &ManualClock,
) {
    configure(s, "q", |cfg| {
        cfg.retention = Retention {
            completed_ms: 86_400_000,
            completed_max: 100,
            dead_ms: 86_400_000,
            dead_max: 3,
        }
    })
    .await;
    let ids = put(s, (0..8).map(|n| job("q", n)).collect()).await;
    // Finished one after another, dead and cancelled in turn.
    for (n, id) in ids[..6].iter().enumerate() {
        c.advance(10);
        if n % 2 == 0 {
            let f = fetch(s, &["q"], 1).await.remove(0);
            assert_eq!(f.id, *id);
            fail(s, &f, false).await;
        } else {
            s.job_cancel(JobCancelParams { id: *id }).await.unwrap();
        }
    }
    for f in fetch(s, &["q"], 2).await {
        c.advance(10);
        ack(s, &f, None).await;
    }
    let report = s.maintenance_run().await.unwrap();
    assert_eq!(
        exist(s, &ids).await,
        vec![false, false, false, true, true, true, true, true],
        "the newest 3 dead and cancelled jobs and every completed one are kept"
    );
    assert_eq!(report.deleted, 3);
    let st = s.queue_stats("q").await.unwrap().unwrap();
    assert_eq!(
        (
            st.counts["dead"],
            st.counts["cancelled"],
            st.counts["completed"]
        ),
        (1, 2, 2)
    );
    // Nothing beyond the count: the next pass deletes nothing.
    assert_eq!(s.maintenance_run().await.unwrap().deleted, 0);
}

async fn exist<S: Store>(s: &S, ids: &[JobId]) -> Vec<bool> {
    let mut out = Vec::new();
    for id in ids {
        out.push(s.job_get(*id).await.unwrap().is_some());
    }
    out
}

pub async fn listing_pages_with_a_cursor<S: Store>(s: &S, _c: &ManualClock) {
    let ids = put(s, (0..25).map(|n| job("q", n)).collect()).await;
    put(s, vec![job("other", 1)]).await;
    let f = fetch(s, &["q"], 3).await;
    ack(s, &f[0], None).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .job_list(JobFilter {
                queue: Some("q".into()),
                state: None,
                after,
                limit: 10,
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 10);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids, "pages cover the queue once, in id order");
    let active = s
        .job_list(JobFilter {
            state: Some(JobState::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.jobs.len(), 2);
}

pub async fn long_poll_wakes_on_enqueue<S: Store>(s: &S, _c: &ManualClock) {
    let started = std::time::Instant::now();
    let (got, _) = tokio::join!(
        s.job_fetch(JobFetchParams {
            queues: vec!["lp".into()],
            max: 1,
            wait_ms: 30_000,
            worker: "w".into()
        }),
        async {
            tokio::task::yield_now().await;
            put1(s, job("lp", 1)).await
        }
    );
    let got = got.unwrap();
    assert_eq!(got.len(), 1, "the waiting fetch did not get the new job");
    // Regression: the bound was the 30 s wait itself, looser than the 1 s fallback nap, so
    // the case passed with the wake-up removed from `job_insert_many`.
    assert!(
        started.elapsed() < super::WAKE_BOUND,
        "woken by the enqueue, not by a fallback nap: {:?}",
        started.elapsed()
    );
    // With nothing to do, a short wait returns empty.
    let none = s
        .job_fetch(JobFetchParams {
            queues: vec!["lp".into()],
            max: 1,
            wait_ms: 20,
            worker: "w".into(),
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn purge_deletes_unstarted_jobs_only<S: Store>(s: &S, c: &ManualClock) {
    let ids = put(
        s,
        vec![
            job("q", 1),
            job("q", 2),
            NewJob {
                delay_ms: Some(60_000),
                ..job("q", 3)
            },
            NewJob {
                group: Some("g".into()),
                ..job("q", 4)
            },
            NewJob {
                group: Some("g".into()),
                unique_key: Some("u".into()),
                ..job("q", 5)
            },
            job("other", 6),
        ],
    )
    .await;
    let running = fetch(s, &["q"], 1).await;
    assert_eq!(running.len(), 1);
    let deleted = s
        .queue_purge(QueuePurgeParams { name: "q".into() })
        .await
        .unwrap();
    assert_eq!(
        deleted, 4,
        "two waiting, one scheduled, one held back by its group"
    );
    let st = s.queue_stats("q").await.unwrap().unwrap();
    assert_eq!(st.counts["waiting"] + st.counts["scheduled"], 0);
    assert_eq!(st.counts["active"], 1, "the running job is left to finish");
    assert_eq!(ack(s, &running[0], None).await.applied, 1);
    for id in &ids[1..5] {
        assert!(s.job_get(*id).await.unwrap().is_none(), "job {id} purged");
    }
    assert!(
        s.job_get(ids[5]).await.unwrap().is_some(),
        "other queues untouched"
    );
    // The unique key was released with its job.
    let again = put1(
        s,
        NewJob {
            unique_key: Some("u".into()),
            ..job("q", 7)
        },
    )
    .await;
    assert!(!ids.contains(&again));
    c.advance(1);
    assert_eq!(
        s.queue_purge(QueuePurgeParams {
            name: "nope".into()
        })
        .await
        .unwrap(),
        0
    );
}

/// Patches applied concurrently all land: `queue_config_update` is one atomic step, never a
/// read and a write that another update can fall between.
pub async fn concurrent_config_updates_all_land<S: Store>(s: &S, _c: &ManualClock) {
    use weir_core::config::PatchFn;
    type Setter = fn(&mut QueueConfig);
    let patches: Vec<(&'static str, Setter)> = vec![
        ("concurrency", |c| c.concurrency = 7),
        ("weight", |c| c.weight = 3),
        ("max_depth", |c| c.max_depth = 1_000),
        ("starvation_ms", |c| c.starvation_ms = 60_000),
        ("group_concurrency", |c| c.group_concurrency = 2),
        ("paused", |c| c.paused = true),
    ];
    let updates = patches.into_iter().map(|(name, f)| {
        s.queue_config_update(QueueConfigUpdateParams {
            name: "cfg".into(),
            patch: std::sync::Arc::new(PatchFn::new(name, f)),
        })
    });
    for r in futures::future::join_all(updates).await {
        r.unwrap();
    }
    let c = s.queue_config_get("cfg").await.unwrap().unwrap();
    assert_eq!(
        (
            c.concurrency,
            c.weight,
            c.max_depth,
            c.starvation_ms,
            c.group_concurrency,
            c.paused
        ),
        (7, 3, 1_000, 60_000, 2, true)
    );
    // A patch whose result does not validate changes nothing.
    let bad = s
        .queue_config_update(QueueConfigUpdateParams {
            name: "cfg".into(),
            patch: std::sync::Arc::new(PatchFn::new("timeout 0", |c| c.timeout_ms = 0)),
        })
        .await;
    assert!(bad.is_err());
    assert_eq!(s.queue_config_get("cfg").await.unwrap().unwrap(), c);
    assert!(s.queue_config_get("never-seen").await.unwrap().is_none());
}

/// Deleting one job: any state but active; an unfinished one frees its group and its
/// unique key; gone from reads and listings.
pub async fn delete_job_frees_its_group_and_key_and_refuses_a_running_one<S: Store>(
    s: &S,
    _c: &ManualClock,
) {
    let ids = put(
        s,
        vec![
            NewJob {
                group: Some("g".into()),
                ..job("q", 1)
            },
            NewJob {
                group: Some("g".into()),
                unique_key: Some("u".into()),
                ..job("q", 2)
            },
            NewJob {
                group: Some("g".into()),
                ..job("q", 3)
            },
        ],
    )
    .await;
    let running = fetch(s, &["q"], 10).await;
    assert_eq!(running.len(), 1, "the group runs one at a time");
    let refused = s
        .job_delete(JobDeleteParams { id: ids[0] })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            weir_core::Error::InvalidState {
                op: "delete",
                state: "active",
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(state(s, ids[0]).await, weir_core::JobState::Active);
    // The second, held back by its group, goes; its unique key is free again.
    s.job_delete(JobDeleteParams { id: ids[1] }).await.unwrap();
    assert!(s.job_get(ids[1]).await.unwrap().is_none());
    let again = put1(
        s,
        NewJob {
            unique_key: Some("u".into()),
            ..job("other", 9)
        },
    )
    .await;
    let reuse = put1(
        s,
        NewJob {
            unique_key: Some("u".into()),
            ..job("q", 10)
        },
    )
    .await;
    assert_ne!(
        reuse, ids[1],
        "the deleted job's key no longer deduplicates"
    );
    assert_ne!(again, reuse);
    assert_eq!(ack(s, &running[0], None).await.applied, 1);
    // The group moved past the deleted job to the third.
    let next = fetch(s, &["q"], 10).await;
    let ns: Vec<u64> = next.iter().map(n_of).collect();
    assert!(ns.contains(&3), "{ns:?}");
    assert!(!ns.contains(&2), "{ns:?}");
    // A finished job can be deleted too.
    s.job_delete(JobDeleteParams { id: ids[0] }).await.unwrap();
    assert!(s.job_get(ids[0]).await.unwrap().is_none());
    let page = s
        .job_list(weir_core::JobFilter {
            queue: Some("q".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.jobs.iter().all(|j| j.id != ids[0] && j.id != ids[1]));
    let gone = s
        .job_delete(JobDeleteParams { id: ids[1] })
        .await
        .unwrap_err();
    assert!(matches!(gone, weir_core::Error::JobNotFound(_)), "{gone:?}");
}

/// Deleting a queue: refused while a job of it runs (changing nothing), then every job,
/// its configuration and its aggregates go; the name can be used again from scratch.
pub async fn delete_queue_removes_everything_but_waits_for_running_jobs<S: Store>(
    s: &S,
    c: &ManualClock,
) {
    configure(s, "q", |cfg| cfg.max_attempts = 7).await;
    let ids = put(
        s,
        vec![
            job("q", 1),
            job("q", 2),
            NewJob {
                delay_ms: Some(60_000),
                unique_key: Some("u".into()),
                ..job("q", 3)
            },
            job("other", 4),
        ],
    )
    .await;
    let running = fetch(s, &["q"], 1).await;
    let busy = s
        .queue_delete(QueueDeleteParams { name: "q".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(busy, weir_core::Error::QueueBusy { active: 1, .. }),
        "{busy:?}"
    );
    for id in &ids[..3] {
        assert!(
            s.job_get(*id).await.unwrap().is_some(),
            "a refused delete changes nothing"
        );
    }
    assert_eq!(ack(s, &running[0], None).await.applied, 1);
    s.maintenance_run().await.unwrap();
    let deleted = s
        .queue_delete(QueueDeleteParams { name: "q".into() })
        .await
        .unwrap();
    assert_eq!(deleted, 3, "two waiting or scheduled and the completed one");
    for id in &ids[..3] {
        assert!(s.job_get(*id).await.unwrap().is_none(), "job {id} deleted");
    }
    assert!(
        s.job_get(ids[3]).await.unwrap().is_some(),
        "other queues untouched"
    );
    assert!(!s.queue_list().await.unwrap().contains(&"q".to_string()));
    assert!(s.queue_stats("q").await.unwrap().is_none());
    assert!(s.queue_config_get("q").await.unwrap().is_none());
    let aggregates = s
        .aggregate_list(AggregateListParams {
            queue: Some("q".into()),
            from_ms: 0,
            to_ms: u64::MAX,
        })
        .await
        .unwrap();
    assert!(aggregates.is_empty(), "{aggregates:?}");
    let unknown = s
        .queue_delete(QueueDeleteParams { name: "q".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, weir_core::Error::QueueNotFound(_)),
        "{unknown:?}"
    );
    // The name starts afresh: default settings, no old key.
    c.advance(1);
    let fresh = put1(
        s,
        NewJob {
            unique_key: Some("u".into()),
            ..job("q", 5)
        },
    )
    .await;
    assert_ne!(fresh, ids[2]);
    let st = s.queue_stats("q").await.unwrap().unwrap();
    assert_eq!(st.counts["waiting"], 1);
    assert_eq!(st.counts["completed"], 0);
    assert_eq!(st.config.max_attempts, QueueConfig::default().max_attempts);
}

/// Cron entries: stored, listed by name, replaced without losing their last tick, advanced
/// only from the tick a caller read (compare and set), deleted.
pub async fn cron_entries_keep_their_last_tick_and_advance_by_compare_and_set<S: Store>(
    s: &S,
    _c: &ManualClock,
) {
    let rec = |name: &str, spec: &str, last: u64| CronRecord {
        name: name.into(),
        spec: spec.into(),
        last_tick_ms: last,
        updated_at_ms: T0,
    };
    assert!(s.cron_list().await.unwrap().is_empty());
    s.cron_put(rec("b", r#"{"schedule":"* * * * *"}"#, T0))
        .await
        .unwrap();
    s.cron_put(rec("a", "{}", T0)).await.unwrap();
    let names: Vec<String> = s
        .cron_list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(s.cron_advance("b", T0, T0 + 60_000).await.unwrap());
    assert!(
        !s.cron_advance("b", T0, T0 + 120_000).await.unwrap(),
        "a stale read cannot move the tick"
    );
    // Replacing the definition keeps the tick already handled.
    let stored = s
        .cron_put(rec("b", r#"{"schedule":"*/5 * * * *"}"#, T0 + 999))
        .await
        .unwrap();
    assert_eq!(stored.last_tick_ms, T0 + 60_000);
    let b = s
        .cron_list()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "b")
        .unwrap();
    assert_eq!(b.spec, r#"{"schedule":"*/5 * * * *"}"#);
    assert_eq!(b.last_tick_ms, T0 + 60_000);
    assert!(s.cron_delete("b").await.unwrap());
    assert!(!s.cron_delete("b").await.unwrap());
    assert!(!s
        .cron_advance("b", T0 + 60_000, T0 + 120_000)
        .await
        .unwrap());
    assert_eq!(s.cron_list().await.unwrap().len(), 1);
}
