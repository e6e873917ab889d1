//! Reading the engine: one job, a filtered page of jobs, queue statistics, aggregates.

use super::{Engine, Slot};
use crate::advisor::{advise, Advice, AdvisorInput};
use crate::aggregate::{AggregateRecord, HOUR_MS};
use crate::job::{Job, JobId, JobState, Payload};
use crate::{LatencyHistogram, QueueConfig};
use roaring::RoaringTreemap;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Which jobs a listing returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only ids above this one (the previous page's `next_cursor`).
    pub after: Option<JobId>,
    /// Page size (clamped to 1..=1000; default 100).
    pub limit: usize,
}

/// A page of jobs, in id order.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// A queue's counts and configuration.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    /// The name.
    pub name: String,
    /// Jobs per state.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Age of the oldest waiting job, ms (0 when none waits).
    pub oldest_waiting_ms: u64,
    /// The configuration.
    pub config: QueueConfig,
    /// Ready-to-start waits of attempts started since the engine was built.
    pub wait_ms: LatencyHistogram,
    /// Run times of jobs completed since the engine was built.
    pub run_ms: LatencyHistogram,
    /// The breaker: `off`, `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Whether the oldest waiting job has waited past `starvation_ms`.
    pub starving: bool,
    /// Enqueues per second over the last minute.
    pub arrival_per_s: f64,
    /// Completions per second over the last minute.
    pub completed_per_s: f64,
    /// Failed attempts per second over the last minute.
    pub failed_per_s: f64,
    /// The scaling advisor's recommendation.
    pub advice: Advice,
}

impl Engine {
    /// One job as a client reads it.
    pub fn job(&self, id: JobId) -> Option<Job> {
        self.jobs.get(&id.0).map(|s| self.view(id.0, s))
    }

    /// The state of one job, cheaply.
    pub fn job_state(&self, id: JobId) -> Option<JobState> {
        self.jobs.get(&id.0).map(|s| s.state)
    }

    pub(crate) fn view(&self, id: u64, s: &Slot) -> Job {
        let e = s.extra.as_deref();
        let doc = |d: Option<&Box<str>>| d.map(|t| Payload::from_stored(t.clone()));
        Job {
            id: JobId(id),
            queue: self.queues[s.queue as usize].name.to_string(),
            kind: self.kinds[s.kind as usize].to_string(),
            payload: Payload::from_stored(s.payload.clone()),
            state: s.state,
            priority: s.priority,
            cost: s.cost,
            attempt: u32::from(s.attempt),
            max_attempts: u32::from(s.max_attempts),
            backoff: e
                .and_then(|e| e.backoff)
                .unwrap_or(self.queues[s.queue as usize].config.backoff),
            timeout_ms: s.timeout_ms,
            created_at_ms: s.created_at,
            run_at_ms: s.run_at,
            started_at_ms: (s.started_at > 0).then_some(s.started_at),
            finished_at_ms: (s.finished_at > 0).then_some(s.finished_at),
            lease_deadline_ms: (s.state == JobState::Active).then_some(s.deadline),
            unique_key: e.and_then(|e| e.unique_key.as_deref()).map(str::to_string),
            group: e.and_then(|e| e.group.as_deref()).map(str::to_string),
            tags: e
                .map(|e| e.tags.iter().map(|t| t.to_string()).collect())
                .unwrap_or_default(),
            progress: doc(e.and_then(|e| e.progress.as_ref())),
            result: doc(e.and_then(|e| e.result.as_ref())),
            errors: e.map(|e| e.errors.clone()).unwrap_or_default(),
        }
    }

    /// A page of jobs matching `filter`, in id order. `O(page)` plus a step per id set the
    /// filter spans: one for a queue and a state, seven for a queue, one per queue for a
    /// state, one for no filter. It never scans jobs the page does not hold.
    pub fn jobs_list(&self, filter: &JobFilter) -> JobPage {
        let limit = if filter.limit == 0 {
            100
        } else {
            filter.limit.min(1000)
        };
        let q = match &filter.queue {
            Some(name) => match self.find_queue(name) {
                Some(q) => Some(q as usize),
                None => {
                    return JobPage {
                        jobs: Vec::new(),
                        next_cursor: None,
                    }
                }
            },
            None => None,
        };
        let sets: Vec<&RoaringTreemap> = match (q, filter.state) {
            (Some(q), Some(st)) => vec![&self.queues[q].ids[st as usize]],
            (Some(q), None) => self.queues[q].ids.iter().collect(),
            (None, Some(st)) => self.queues.iter().map(|qs| &qs.ids[st as usize]).collect(),
            (None, None) => vec![&self.all_ids],
        };
        let after = filter.after.map_or(0, |a| a.0);
        let mut ids = merge_after(&sets, after, limit + 1);
        let more = ids.len() > limit;
        ids.truncate(limit);
        JobPage {
            next_cursor: if more {
                ids.last().copied().map(JobId)
            } else {
                None
            },
            jobs: ids
                .iter()
                .filter_map(|id| self.jobs.get(id).map(|s| self.view(*id, s)))
                .collect(),
        }
    }

    /// Names of every queue that has jobs or a configuration.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues
            .iter()
            .filter(|q| !q.deleted)
            .map(|q| q.name.to_string())
            .collect()
    }

    /// When the oldest waiting job of queue `q` became ready, grouped jobs held back by
    /// their group included. `O(log n)`: the first key of the queue's ready-time index.
    pub(crate) fn oldest_waiting(&self, q: u32) -> Option<u64> {
        self.queues[q as usize]
            .waiting_since
            .first_key_value()
            .map(|(&t, _)| t)
    }

    /// One queue's statistics, or `None` for a queue never seen.
    pub fn queue_stats(&self, name: &str, now: u64) -> Option<QueueStats> {
        let q = self.find_queue(name)?;
        let qs = &self.queues[q as usize];
        let oldest = self.oldest_waiting(q);
        let count = |s: JobState| qs.counts[s as usize];
        let run = &qs.run_hist;
        let input = AdvisorInput {
            backlog: count(JobState::Waiting),
            active: count(JobState::Active),
            arrival_per_s: qs.flow.enqueued.per_sec(now),
            completed_per_s: qs.flow.completed.per_sec(now),
            failed_per_s: qs.flow.failed.per_sec(now),
            mean_run_ms: (run.count > 0).then(|| run.sum_ms as f64 / run.count as f64),
            wait_p95_ms: qs.wait_hist.quantile_upper_bound(0.95),
            drain_window_ms: qs.config.drain_window_ms,
        };
        Some(QueueStats {
            name: name.to_string(),
            counts: JobState::ALL
                .iter()
                .map(|st| (st.as_str(), qs.counts[*st as usize]))
                .collect(),
            oldest_waiting_ms: oldest.map_or(0, |t| now.saturating_sub(t)),
            config: qs.config.clone(),
            wait_ms: qs.wait_hist.clone(),
            run_ms: qs.run_hist.clone(),
            breaker: if qs.config.breaker.is_some() {
                qs.flow.shared.breaker.name()
            } else {
                "off"
            },
            starving: qs.flow.starving_since.is_some(),
            arrival_per_s: input.arrival_per_s,
            completed_per_s: input.completed_per_s,
            failed_per_s: input.failed_per_s,
            advice: advise(&input),
        })
    }

    /// Hourly aggregates of one queue (or all) for hours starting in `[from_ms, to_ms)`.
    pub fn aggregates(
        &self,
        queue: Option<&str>,
        from_ms: u64,
        to_ms: u64,
    ) -> Vec<AggregateRecord> {
        let q = queue.map(|n| self.find_queue(n));
        if q == Some(None) {
            return Vec::new();
        }
        let from = from_ms - from_ms % HOUR_MS;
        self.aggregates
            .iter()
            .filter(|((aq, h), _)| *h >= from && *h < to_ms && q.is_none_or(|q| q == Some(*aq)))
            .map(|((aq, h), a)| self.aggregate_record(*aq, *h, a))
            .collect()
    }

    pub(crate) fn aggregate_record(
        &self,
        q: u32,
        hour: u64,
        a: &crate::aggregate::Aggregate,
    ) -> AggregateRecord {
        AggregateRecord {
            queue: self.queues[q as usize].name.to_string(),
            hour_ms: hour,
            counts: *a,
        }
    }
}

/// The first `n` ids above `after` in the union of `sets` (which are disjoint), ascending.
fn merge_after(sets: &[&RoaringTreemap], after: u64, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n.min(1024));
    let Some(from) = after.checked_add(1) else {
        return out;
    };
    let mut iters: Vec<_> = sets
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut it = s.iter();
            it.advance_to(from);
            it
        })
        .collect();
    if let [only] = iters.as_mut_slice() {
        out.extend(only.take(n));
        return out;
    }
    let mut heads: BinaryHeap<Reverse<(u64, usize)>> = iters
        .iter_mut()
        .enumerate()
        .filter_map(|(i, it)| it.next().map(|id| Reverse((id, i))))
        .collect();
    while out.len() < n {
        let Some(Reverse((id, i))) = heads.pop() else {
            break;
        };
        out.push(id);
        if let Some(next) = iters[i].next() {
            heads.push(Reverse((next, i)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, Fail, Limits, NewJob};

    /// An engine with jobs of three queues in every state, some grouped, made by a seeded
    /// random walk of enqueues, fetches, acks, fails, cancels and clock moves.
    fn busy_engine(seed: u64) -> (Engine, u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut e = Engine::new(Limits::default(), seed);
        let mut now = 1_000_000;
        let queues = ["a", "b", "c"];
        for round in 0..60 {
            let jobs = (0..rng.usize(1..30))
                .map(|i| {
                    let q = queues[rng.usize(..queues.len())];
                    let mut j = NewJob::new(
                        q,
                        "k",
                        Payload::json(&serde_json::json!({ "i": i })).unwrap(),
                    );
                    j.priority = rng.i32(-2..3);
                    if rng.u8(..4) == 0 {
                        j.delay_ms = Some(rng.u64(1..5_000));
                    }
                    if rng.u8(..3) == 0 {
                        j.group = Some(format!("g{}", rng.u8(..3)));
                    }
                    j
                })
                .collect();
            e.enqueue(jobs, now).unwrap();
            let got = e.fetch(&queues, rng.usize(0..20), now);
            let (acks, rest): (Vec<_>, Vec<_>) = got.into_iter().partition(|_| rng.bool());
            let acks = acks.iter().map(Ack::of);
            e.ack(acks.collect(), now).unwrap();
            let retry = rng.bool();
            let fails = rest.iter().filter(|_| rng.bool()).map(|f| Fail {
                id: f.id,
                lease_id: f.lease_id,
                error: "no".into(),
                retry,
            });
            e.fail(fails.collect(), now).unwrap();
            if round % 7 == 0 {
                let victim = JobId(rng.u64(1..e.next_id()));
                let _ = e.cancel(victim, now);
            }
            now += rng.u64(0..2_000);
            e.tick(now);
            e.check_invariants().unwrap();
        }
        (e, now)
    }

    /// Every page the id sets serve matches a scan of all jobs filtered the same way, for
    /// every combination of filters, walked page by page with the cursor.
    #[test]
    fn job_pages_from_the_id_sets_match_a_scan() {
        for seed in 0..4 {
            let (e, _) = busy_engine(seed);
            let queues = [None, Some("a"), Some("b"), Some("c"), Some("missing")];
            let states = std::iter::once(None).chain(JobState::ALL.into_iter().map(Some));
            for state in states {
                for q in queues {
                    let mut want: Vec<u64> = e
                        .jobs
                        .iter()
                        .filter(|(_, s)| {
                            q.is_none_or(|q| *e.queues[s.queue as usize].name == *q)
                                && state.is_none_or(|st| s.state == st)
                        })
                        .map(|(&id, _)| id)
                        .collect();
                    want.sort_unstable();
                    let mut got = Vec::new();
                    let mut after = None;
                    loop {
                        let page = e.jobs_list(&JobFilter {
                            queue: q.map(str::to_string),
                            state,
                            after,
                            limit: 7,
                        });
                        assert!(page.jobs.len() <= 7);
                        got.extend(page.jobs.iter().map(|j| j.id.0));
                        match page.next_cursor {
                            Some(c) => after = Some(c),
                            None => break,
                        }
                    }
                    assert_eq!(got, want, "seed {seed}, queue {q:?}, state {state:?}");
                }
            }
        }
    }

    /// The ready-time index gives what a scan of every waiting job (held-back grouped ones
    /// included) gives.
    #[test]
    fn oldest_waiting_from_the_index_matches_a_scan() {
        for seed in 0..4 {
            let (e, _) = busy_engine(seed);
            for (q, _) in e.queues.iter().enumerate() {
                let scan = e
                    .jobs
                    .values()
                    .filter(|s| s.queue == q as u32 && s.state == JobState::Waiting)
                    .map(|s| s.run_at)
                    .min();
                assert_eq!(e.oldest_waiting(q as u32), scan, "seed {seed}, queue {q}");
            }
        }
    }
}
