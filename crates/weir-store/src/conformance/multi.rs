//! Cases for backends whose data several servers share: two handles on the same data (two
//! `weir serve` processes on one database) must behave as one store. A backend that one
//! process owns (the embedded store) skips them, saying why (see
//! [`Fixture::second`](super::Fixture::second)).

use super::*;
use std::collections::HashSet;

/// Fetches from `a` and `b` in turn, `max` at a time, until neither hands out anything;
/// returns every job each handed out.
async fn drain<S: Store>(
    a: &S,
    b: &S,
    queue: &str,
    max: usize,
) -> (Vec<FetchedJob>, Vec<FetchedJob>) {
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    loop {
        let queues = [queue];
        let (ga, gb) = tokio::join!(fetch(a, &queues, max), fetch(b, &queues, max));
        if ga.is_empty() && gb.is_empty() {
            return (from_a, from_b);
        }
        from_a.extend(ga);
        from_b.extend(gb);
    }
}

/// Jobs enqueued through one handle are fetched through both, concurrently, and no job is
/// leased to both.
pub async fn two_handles_never_lease_one_job_twice<S: Store>(a: &S, b: &S, _c: &ManualClock) {
    let ids = put(a, (0..200).map(|n| job("shared", n)).collect()).await;
    let (from_a, from_b) = drain(a, b, "shared", 7).await;
    let mut seen = HashSet::new();
    for f in from_a.iter().chain(&from_b) {
        assert!(seen.insert(f.id), "job {} was leased twice", f.id);
    }
    assert_eq!(seen.len(), ids.len(), "every job was handed out once");
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both handles took part"
    );
    // Each handle's acks apply to the jobs it leased, whichever handle enqueued them.
    for f in from_b.iter().take(3) {
        assert_eq!(ack(b, f, None).await.applied, 1);
    }
    assert_eq!(state(a, from_b[0].id).await, weir_core::JobState::Completed);
}

/// A queue's concurrency limit, set through one handle, counts the jobs active through
/// both.
pub async fn a_concurrency_limit_holds_across_handles<S: Store>(a: &S, b: &S, _c: &ManualClock) {
    configure(a, "limited", |c| c.concurrency = 3).await;
    put(a, (0..20).map(|n| job("limited", n)).collect()).await;
    let (from_a, from_b) = drain(a, b, "limited", 10).await;
    assert_eq!(
        from_a.len() + from_b.len(),
        3,
        "at most 3 active across both handles"
    );
    // An ack through the handle that leased a job frees a slot for the other handle.
    let (holder, other, f) = match from_a.first() {
        Some(f) => (a, b, f),
        None => (b, a, &from_b[0]),
    };
    assert_eq!(ack(holder, f, None).await.applied, 1);
    let next = fetch(other, &["limited"], 10).await;
    assert_eq!(next.len(), 1, "the freed slot, and only it");
}

/// Two servers racing for one cron tick: exactly one advance wins, and both see it.
pub async fn one_handle_wins_each_cron_tick<S: Store>(a: &S, b: &S, _c: &ManualClock) {
    a.cron_put(CronRecord {
        name: "nightly".into(),
        spec: "{}".into(),
        last_tick_ms: T0,
        updated_at_ms: T0,
    })
    .await
    .unwrap();
    for round in 1..=20u64 {
        let from = T0 + (round - 1) * 1000;
        let to = T0 + round * 1000;
        let (wa, wb) = tokio::join!(
            a.cron_advance("nightly", from, to),
            b.cron_advance("nightly", from, to)
        );
        let (wa, wb) = (wa.unwrap(), wb.unwrap());
        assert!(wa ^ wb, "round {round}: exactly one wins ({wa}, {wb})");
    }
    let seen = b.cron_list().await.unwrap();
    assert_eq!(seen[0].last_tick_ms, T0 + 20_000);
}
