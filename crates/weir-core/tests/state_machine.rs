//! Property tests of the engine's state machine over random operation sequences and clock
//! moves. After every step: each job is in exactly one state and index (the engine's own
//! invariant check), no group has two active jobs, no job is handed out while another lease
//! on it is live, and every acked result is still there. At the end, draining the engine
//! leaves every job completed, dead or cancelled. The same sequence twice gives the same
//! trace (determinism).

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::collections::HashMap;
use weir_core::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: u8,
        group: Option<u8>,
        priority: i8,
        delay: u16,
        attempts: u8,
        timeout: u16,
        unique: Option<u8>,
    },
    Fetch {
        queues: u8,
        max: u8,
    },
    Ack {
        pick: usize,
    },
    Fail {
        pick: usize,
        retry: bool,
    },
    Heartbeat {
        pick: usize,
    },
    Release {
        pick: usize,
    },
    Cancel {
        pick: usize,
    },
    Retry {
        pick: usize,
    },
    Advance {
        ms: u16,
    },
    Maintain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..2, prop::option::of(0u8..3), -2i8..3, prop_oneof![Just(0u16), Just(500), 0u16..3000], 1u8..4, 100u16..2000, prop::option::weighted(0.2, 0u8..3))
            .prop_map(|(queue, group, priority, delay, attempts, timeout, unique)| Op::Enqueue { queue, group, priority, delay, attempts, timeout, unique }),
        3 => (0u8..3, 1u8..5).prop_map(|(queues, max)| Op::Fetch { queues, max }),
        3 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, retry)| Op::Fail { pick, retry }),
        1 => any::<usize>().prop_map(|pick| Op::Heartbeat { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
        3 => (0u16..1500).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Maintain),
    ]
}

const QUEUES: [&str; 2] = ["a", "b"];

/// What the test remembers, to check the engine against.
#[derive(Default)]
struct Model {
    ids: Vec<JobId>,
    /// Every lease ever granted, live or not, oldest first.
    grants: Vec<FetchedJob>,
    /// The lease each job is believed to hold now, with its deadline.
    live: HashMap<JobId, (u64, u64)>,
    /// Acked jobs and the result they were acked with.
    acked: HashMap<JobId, String>,
}

fn run(ops: &[Op]) -> Vec<String> {
    let mut e = Engine::new(Limits::default(), 42);
    let ten_years = Limits::default().max_duration_ms;
    for (i, q) in QUEUES.into_iter().enumerate() {
        let cfg = QueueConfig {
            // One queue with ordered groups, one with two jobs per group at once.
            group_concurrency: 1 + i as u32,
            // ... and a per-key rate limit on the second, so throttled groups are exercised.
            group_rate_limit: (i == 1).then_some(RateLimit {
                limit: 5,
                period_ms: 1_000,
                burst: 2,
            }),
            aging_ms: 1_000,
            backoff: Backoff {
                base_ms: 10,
                cap_ms: 2_000,
            },
            // Keep every finished job, so acked results can be checked to the end.
            retention: Retention {
                completed_ms: ten_years,
                completed_max: u64::MAX,
                dead_ms: ten_years,
                dead_max: u64::MAX,
            },
            ..Default::default()
        };
        e.queue_config_set(q, cfg).unwrap();
    }
    let mut now = 1_000_000u64;
    let mut m = Model::default();
    let mut trace = Vec::new();
    let pick = |v: &Vec<FetchedJob>, i: usize| (!v.is_empty()).then(|| v[i % v.len()].clone());
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Enqueue {
                queue,
                group,
                priority,
                delay,
                attempts,
                timeout,
                unique,
            } => {
                let mut j =
                    NewJob::new(QUEUES[*queue as usize], "k", Payload::json(&step).unwrap());
                j.group = group.map(|g| format!("g{g}"));
                j.priority = i32::from(*priority);
                j.delay_ms = (*delay > 0).then_some(u64::from(*delay));
                j.max_attempts = Some(u32::from(*attempts));
                j.timeout_ms = Some(u64::from(*timeout));
                j.unique_key = unique.map(|u| format!("u{u}"));
                let id = e.enqueue(vec![j], now).unwrap()[0];
                if !m.ids.contains(&id) {
                    m.ids.push(id);
                }
                trace.push(format!("enq {id}"));
            }
            Op::Fetch { queues, max } => {
                let qs: &[&str] = match queues {
                    0 => &["a"],
                    1 => &["b"],
                    _ => &["b", "a"],
                };
                let got = e.fetch(qs, usize::from(*max), now);
                for f in &got {
                    if let Some((lease, deadline)) = m.live.get(&f.id) {
                        assert!(*deadline <= now, "job {} handed out while lease {lease} lives until {deadline} (now {now})", f.id);
                    }
                    m.live.insert(f.id, (f.lease_id, f.lease_deadline_ms));
                    trace.push(format!("fetch {} a{}", f.id, f.attempt));
                }
                m.grants.extend(got);
            }
            Op::Ack { pick: i } => {
                if let Some(g) = pick(&m.grants, *i) {
                    let result = format!("\"r{step}\"");
                    let out = e
                        .ack(
                            vec![Ack {
                                id: g.id,
                                lease_id: g.lease_id,
                                result: Some(Payload::parse(&result).unwrap()),
                            }],
                            now,
                        )
                        .unwrap();
                    let was_live = m
                        .live
                        .get(&g.id)
                        .is_some_and(|&(l, d)| l == g.lease_id && d > now)
                        && e.job_state(g.id) == Some(JobState::Completed);
                    if out.applied == 1 {
                        assert!(was_live, "ack applied under a lease the model thinks dead");
                        assert!(!m.acked.contains_key(&g.id), "job {} acked twice", g.id);
                        m.acked.insert(g.id, result);
                        m.live.remove(&g.id);
                    }
                    trace.push(format!("ack {} {}", g.id, out.applied));
                }
            }
            Op::Fail { pick: i, retry } => {
                if let Some(g) = pick(&m.grants, *i) {
                    let out = e
                        .fail(
                            vec![Fail {
                                id: g.id,
                                lease_id: g.lease_id,
                                error: "x".into(),
                                retry: *retry,
                            }],
                            now,
                        )
                        .unwrap();
                    if out.applied == 1 {
                        m.live.remove(&g.id);
                    }
                    trace.push(format!("fail {} {}", g.id, out.applied));
                }
            }
            Op::Heartbeat { pick: i } => {
                if let Some(g) = pick(&m.grants, *i) {
                    if let Ok(d) = e.heartbeat(g.id, g.lease_id, None, now) {
                        m.live.insert(g.id, (g.lease_id, d));
                        trace.push(format!("hb {} {d}", g.id));
                    }
                }
            }
            Op::Release { pick: i } => {
                if let Some(g) = pick(&m.grants, *i) {
                    if e.release(g.id, g.lease_id, now).is_ok() {
                        m.live.remove(&g.id);
                        trace.push(format!("release {}", g.id));
                    }
                }
            }
            Op::Cancel { pick: i } => {
                if !m.ids.is_empty() {
                    let id = m.ids[i % m.ids.len()];
                    if e.cancel(id, now).is_ok() {
                        m.live.remove(&id);
                        trace.push(format!("cancel {id}"));
                    }
                }
            }
            Op::Retry { pick: i } => {
                if !m.ids.is_empty() {
                    let id = m.ids[i % m.ids.len()];
                    let ok = e.retry(id, now).is_ok();
                    trace.push(format!("retry {id} {ok}"));
                }
            }
            Op::Advance { ms } => now += u64::from(*ms),
            Op::Maintain => {
                e.tick(now);
                e.enforce_retention(now, 100);
            }
        }
        check(&e, &m, now);
    }
    // Drain: with time moving on and every job acked when fetched, all jobs finish.
    for _ in 0..200 {
        now += 10_000;
        let got = e.fetch(&["a", "b"], 1_000, now);
        if got.is_empty() && e.next_wakeup().is_none() {
            break;
        }
        let acks = got.iter().map(Ack::of).collect();
        let out = e.ack(acks, now).unwrap();
        assert!(
            out.rejected.is_empty(),
            "drain ack refused: {:?}",
            out.rejected
        );
        check(&e, &m, now);
    }
    for id in &m.ids {
        let st = e.job_state(*id).unwrap();
        assert!(st.is_terminal(), "job {id} still {st} after draining");
    }
    trace
}

fn check(e: &Engine, m: &Model, _now: u64) {
    e.check_invariants().unwrap();
    for (id, result) in &m.acked {
        let j = e.job(*id).expect("an acked job vanished");
        // A completed job may be retried only if dead or cancelled, so it stays completed.
        assert_eq!(
            j.state,
            JobState::Completed,
            "acked job {id} left completed"
        );
        assert_eq!(
            j.result.as_ref().map(|r| r.as_str()),
            Some(result.as_str()),
            "acked result lost"
        );
    }
    let active = e.jobs_list(&JobFilter {
        state: Some(JobState::Active),
        limit: 1000,
        ..Default::default()
    });
    let mut groups = HashMap::new();
    for j in active.jobs {
        if let Some(g) = j.group {
            *groups.entry((j.queue, g)).or_insert(0) += 1;
        }
    }
    // Queue "a" has ordered groups (one at a time), queue "b" two per group.
    assert!(
        groups
            .iter()
            .all(|((q, _), &n)| n <= if q == "a" { 1 } else { 2 }),
        "a group has more active jobs than its limit: {groups:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_keeps_its_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let first = run(&ops);
        let second = run(&ops);
        prop_assert_eq!(first, second, "the same operations gave different results");
    }
}
