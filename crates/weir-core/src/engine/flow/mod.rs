//! Flow control inside the engine: per-queue concurrency limits, rate limits (GCRA), circuit
//! breakers, load shedding by depth, weighted sharing of one fetch over several queues,
//! starvation detection, and the rates the scaling advisor reads.
//!
//! Enforced here, not by workers, so a limit holds across every worker and every fetch. All
//! of it reads the injected `now`, so tests move a clock and get the same result every run.
//! The runtime state (rate-limit arrival times, breaker state, rate meters) lives in memory
//! and restarts fresh with the process; the configuration is persisted with the queue.

mod breaker;
mod gcra;
mod group_rate;
mod meter;
mod starvation;

pub use breaker::Breaker;
pub use gcra::{gcra, gcra_allowance};
pub(crate) use meter::RateMeter;

use super::{Engine, QueueState};
use crate::config::{BreakerConfig, RateLimit};
use crate::job::JobState;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// Most flow events kept until someone takes them.
const MAX_EVENTS: usize = 1_000;

/// Something an operator should hear about: the store logs these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowEvent {
    /// A queue's oldest waiting job passed its starvation threshold.
    Starving {
        /// The queue.
        queue: String,
        /// How long its oldest waiting job has waited, ms.
        oldest_ms: u64,
    },
    /// A starving queue recovered.
    Recovered {
        /// The queue.
        queue: String,
    },
    /// A queue's breaker changed state (`open`, `half_open`, `closed`).
    Breaker {
        /// The queue.
        queue: String,
        /// The new state.
        state: &'static str,
    },
}

/// The flow-control state every server handing out a queue's jobs must share: the rate
/// limit's arrival time and the circuit breaker with its window. The embedded engine keeps
/// it in memory; the PostgreSQL backend keeps it in the queue's row, locked by the fetches
/// and acks that change it, so that a limit holds across servers. One implementation of
/// each algorithm for both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedFlow {
    /// GCRA theoretical arrival time, µs.
    tat_us: u64,
    /// The breaker.
    pub breaker: Breaker,
    /// Finished calls in the breaker's window, in buckets of a fiftieth of the window:
    /// `(bucket start, calls, failures)`. Bounded memory and O(1) per call at any rate.
    window: VecDeque<(u64, u32, u32)>,
    /// Sums over `window`.
    window_calls: u64,
    window_failures: u64,
    consecutive_failures: u32,
}

impl SharedFlow {
    /// How many jobs the rate limit and the breaker let through now (`usize::MAX` when
    /// neither limits); moves an open breaker whose cool-down passed to half open.
    pub fn allowance(
        &mut self,
        rate: Option<&RateLimit>,
        breaker: Option<&BreakerConfig>,
        now: u64,
    ) -> usize {
        let mut allow = usize::MAX;
        if let Some(rl) = rate {
            allow = allow.min(self.rate_allowance(rl, now));
        }
        if let Some(b) = breaker {
            allow = allow.min(self.breaker_allowance(b, now));
        }
        allow
    }

    /// Uses `n` of the allowance: rate tokens and half-open probes.
    pub fn consume(&mut self, rate: Option<&RateLimit>, n: usize, now: u64) {
        if n == 0 {
            return;
        }
        if let Some(rl) = rate {
            self.rate_consume(rl, n, now);
        }
        if let Breaker::HalfOpen {
            probes_left,
            successes,
        } = self.breaker
        {
            self.breaker = Breaker::HalfOpen {
                probes_left: probes_left.saturating_sub(n as u32),
                successes,
            };
        }
    }

    /// Counts a finished call for the breaker: `failed` is a failed attempt, `slow` a
    /// completed call over the slow-call threshold.
    pub fn record_call(&mut self, cfg: &BreakerConfig, failed: bool, slow: bool, now: u64) {
        self.record(cfg, failed, slow, now);
    }

    /// When a fetcher held back by the rate limit or an open breaker may next get a job,
    /// ms; `None` when neither holds it back now.
    pub fn next_token_at(&self, rate: Option<&RateLimit>, now: u64) -> Option<u64> {
        let rate = rate
            .filter(|rl| self.rate_allowance(rl, now) == 0)
            .map(|rl| self.rate_due(rl));
        let breaker = match self.breaker {
            Breaker::Open { until } => Some(until),
            _ => None,
        };
        rate.into_iter().chain(breaker).max()
    }
}

/// One queue's flow-control runtime state.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowState {
    /// What several servers would share.
    pub(crate) shared: SharedFlow,
    pub(crate) enqueued: RateMeter,
    pub(crate) completed: RateMeter,
    pub(crate) failed: RateMeter,
    /// Since when the queue has been starving, if it is.
    pub(crate) starving_since: Option<u64>,
    /// When starvation was last evaluated (it costs a scan of the ready jobs).
    starvation_checked_at: u64,
}

impl Engine {
    /// Flow events since the last call (at most the last 1,000).
    pub fn take_flow_events(&mut self) -> Vec<FlowEvent> {
        std::mem::take(&mut self.flow_events)
    }

    fn flow_event(&mut self, e: FlowEvent) {
        if self.flow_events.len() < MAX_EVENTS {
            self.flow_events.push(e);
        }
    }

    /// Records a breaker transition of queue `q`, if there was one.
    fn breaker_moved(&mut self, q: u32, before: Breaker) {
        let qs = &self.queues[q as usize];
        let now = qs.flow.shared.breaker;
        if std::mem::discriminant(&before) != std::mem::discriminant(&now) {
            let queue = qs.name.to_string();
            self.flow_event(FlowEvent::Breaker {
                queue,
                state: now.name(),
            });
        }
    }

    /// How many jobs queue `q` may hand out now, by its concurrency limit, rate limit and
    /// breaker (`usize::MAX` when nothing limits it).
    pub(crate) fn allowance(&mut self, q: u32, now: u64) -> usize {
        let qs = &mut self.queues[q as usize];
        let mut allow = usize::MAX;
        if qs.config.concurrency > 0 {
            let active = qs.counts[JobState::Active as usize];
            allow = (u64::from(qs.config.concurrency).saturating_sub(active)) as usize;
        }
        if let Some(rl) = &qs.config.rate_limit {
            allow = allow.min(qs.flow.shared.rate_allowance(rl, now));
        }
        if let Some(b) = qs.config.breaker {
            let before = qs.flow.shared.breaker;
            allow = allow.min(qs.flow.shared.breaker_allowance(&b, now));
            self.breaker_moved(q, before);
        }
        allow
    }

    /// Uses `n` of queue `q`'s allowance (rate tokens, half-open probes).
    pub(crate) fn consume_allowance(&mut self, q: u32, n: usize, now: u64) {
        if n == 0 {
            return;
        }
        let qs = &mut self.queues[q as usize];
        if let Some(rl) = qs.config.rate_limit {
            qs.flow.shared.rate_consume(&rl, n, now);
        }
        if let Breaker::HalfOpen {
            probes_left,
            successes,
        } = qs.flow.shared.breaker
        {
            qs.flow.shared.breaker = Breaker::HalfOpen {
                probes_left: probes_left.saturating_sub(n as u32),
                successes,
            };
        }
    }

    /// Counts a completed call of queue `q` that ran `run_ms`.
    pub(crate) fn flow_completed(&mut self, q: u32, run_ms: u64, now: u64) {
        let qs = &mut self.queues[q as usize];
        qs.flow.completed.add(now, 1);
        if let Some(b) = qs.config.breaker {
            let slow = b.slow_call_ms > 0 && run_ms > b.slow_call_ms;
            let before = qs.flow.shared.breaker;
            qs.flow.shared.record(&b, false, slow, now);
            self.breaker_moved(q, before);
        }
    }

    /// Counts a failed attempt of queue `q`.
    pub(crate) fn flow_failed(&mut self, q: u32, now: u64) {
        let qs = &mut self.queues[q as usize];
        qs.flow.failed.add(now, 1);
        if let Some(b) = qs.config.breaker {
            let before = qs.flow.shared.breaker;
            qs.flow.shared.record(&b, true, false, now);
            self.breaker_moved(q, before);
        }
    }

    /// Refuses an enqueue that would take queue `q` past its `max_depth`.
    pub(crate) fn check_depth(&self, q: u32, adding: u64, now: u64) -> Result<()> {
        let qs = &self.queues[q as usize];
        let max = qs.config.max_depth;
        if max == 0 {
            return Ok(());
        }
        let depth = depth(qs);
        if depth + adding <= max {
            return Ok(());
        }
        // Suggest waiting for as long as the queue takes to drain the excess at its recent
        // completion rate (1 s when it has none), within 100 ms..60 s.
        let excess = (depth + adding - max) as f64;
        let rate = qs.flow.completed.per_sec(now);
        let retry_after_ms = if rate > 0.0 {
            ((excess / rate) * 1000.0).ceil() as u64
        } else {
            1_000
        }
        .clamp(100, 60_000);
        Err(Error::Overloaded {
            queue: qs.name.to_string(),
            depth,
            max_depth: max,
            retry_after_ms,
        })
    }

    /// When one of `queues`, holding ready work that its rate limit or breaker keeps back,
    /// may next hand out a job (ms since the epoch); `None` when nothing is held back that
    /// way. What a fetcher that got nothing is told.
    pub fn next_token_at(&self, queues: &[&str]) -> Option<u64> {
        queues
            .iter()
            .filter_map(|n| self.find_queue(n))
            .filter_map(|q| {
                let qs = &self.queues[q as usize];
                if qs.ready.is_empty() || qs.config.paused {
                    return None;
                }
                let rate = qs
                    .config
                    .rate_limit
                    .as_ref()
                    .filter(|rl| qs.flow.shared.rate_allowance(rl, self.now) == 0)
                    .map(|rl| qs.flow.shared.rate_due(rl));
                let breaker = match qs.flow.shared.breaker {
                    Breaker::Open { until } => Some(until),
                    _ => None,
                };
                rate.into_iter().chain(breaker).max()
            })
            .min()
    }

    /// The earliest time a rate-limited or broken queue with ready work may hand out a job.
    pub(crate) fn flow_wakeup(&self) -> Option<u64> {
        self.queues
            .iter()
            .filter(|qs| !qs.ready.is_empty() && !qs.config.paused)
            .filter_map(|qs| {
                let rate = qs
                    .config
                    .rate_limit
                    .as_ref()
                    .map(|rl| qs.flow.shared.rate_due(rl));
                let breaker = match qs.flow.shared.breaker {
                    Breaker::Open { until } => Some(until),
                    _ => None,
                };
                match (rate, breaker) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }
}

/// Unfinished jobs of a queue: what `max_depth` bounds.
pub(crate) fn depth(qs: &QueueState) -> u64 {
    [
        JobState::Scheduled,
        JobState::Waiting,
        JobState::Active,
        JobState::Failed,
    ]
    .iter()
    .map(|s| qs.counts[*s as usize])
    .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_one_per_interval() {
        let rl = RateLimit {
            limit: 10,
            period_ms: 1000,
            burst: 3,
        };
        let mut f = SharedFlow::default();
        assert_eq!(f.rate_allowance(&rl, 0), 3);
        f.rate_consume(&rl, 3, 0);
        assert_eq!(f.rate_allowance(&rl, 0), 0);
        assert_eq!(f.rate_due(&rl), 100, "the next token 100 ms later");
        assert_eq!(f.rate_allowance(&rl, 99), 0);
        assert_eq!(f.rate_allowance(&rl, 100), 1);
        // A quiet spell refills to the burst, never beyond.
        assert_eq!(f.rate_allowance(&rl, 10_000), 3);
    }

    #[test]
    fn rate_meter_averages_the_last_minute() {
        let mut m = RateMeter::default();
        assert_eq!(m.per_sec(5_000), 0.0);
        for s in 0..10u64 {
            m.add(s * 1000, 6);
        }
        assert!((m.per_sec(9_999) - 6.0).abs() < 1e-9);
        // A minute later the old seconds have rolled out.
        assert!(m.per_sec(200_000) < 1e-9);
    }

    #[test]
    fn per_key_limiter_state_stays_bounded() {
        use crate::{Ack, Limits, NewJob, Payload, QueueConfig};
        let mut e = Engine::new(Limits::default(), 1);
        let cfg = QueueConfig {
            group_rate_limit: Some(RateLimit {
                limit: 1,
                period_ms: 1_000,
                burst: 1,
            }),
            ..QueueConfig::default()
        };
        e.queue_config_set("q", cfg).unwrap();
        let mut now = 1_000_000;
        // 20 rounds of 1,000 short-lived keys, one job each, a second apart.
        for round in 0..20u64 {
            let jobs = (0..1_000)
                .map(|k| {
                    let mut j = NewJob::new("q", "k", Payload::parse("1").unwrap());
                    j.group = Some(format!("key-{round}-{k}"));
                    j
                })
                .collect();
            e.enqueue(jobs, now).unwrap();
            let got = e.fetch(&["q"], 10_000, now);
            assert_eq!(got.len(), 1_000, "each new key has its burst");
            let acks = got.iter().map(Ack::of).collect();
            e.ack(acks, now).unwrap();
            now += 1_000;
        }
        e.tick(now);
        assert!(
            e.group_tats.len() <= 4_000,
            "{} limiter entries for 20,000 keys",
            e.group_tats.len()
        );
        assert!(e.groups.is_empty(), "finished groups are dropped");
        e.check_invariants().unwrap();
    }

    #[test]
    fn memory_budget_sheds_enqueues_until_retention_makes_room() {
        use crate::{Ack, Error, Limits, NewJob, Payload, QueueConfig, Retention};
        let limits = Limits {
            max_memory_bytes: 10 * (super::super::JOB_OVERHEAD_BYTES + 1),
            ..Limits::default()
        };
        let mut e = Engine::new(limits, 1);
        let cfg = QueueConfig {
            retention: Retention {
                completed_max: 1,
                ..Retention::default()
            },
            ..QueueConfig::default()
        };
        e.queue_config_set("q", cfg).unwrap();
        let one = || NewJob::new("q", "k", Payload::parse("1").unwrap());
        e.enqueue((0..10).map(|_| one()).collect(), 0).unwrap();
        let before = e.len();
        match e.enqueue(vec![one()], 0) {
            Err(Error::Overloaded { max_depth: 0, .. }) => {}
            other => panic!("expected the memory budget to refuse, got {other:?}"),
        }
        assert_eq!(e.len(), before, "a refused enqueue changes nothing");
        let got = e.fetch(&["q"], 5, 0);
        let acks = got.iter().map(Ack::of).collect();
        e.ack(acks, 0).unwrap();
        assert!(
            e.enqueue(vec![one()], 0).is_err(),
            "completed jobs still held"
        );
        e.enforce_retention(0, 100);
        // Retention kept one of the five completed jobs: room for four.
        e.enqueue((0..4).map(|_| one()).collect(), 0).unwrap();
        assert!(
            e.enqueue(vec![one()], 0).is_err(),
            "the budget is full again"
        );
        e.check_invariants().unwrap();

        // A queue that keeps no completed jobs frees their room at the ack itself.
        e.queue_config_set(
            "q",
            QueueConfig {
                retention: Retention {
                    completed_max: 0,
                    ..Retention::default()
                },
                ..QueueConfig::default()
            },
        )
        .unwrap();
        let got = e.fetch(&["q"], 3, 0);
        let acks = got.iter().map(Ack::of).collect();
        e.ack(acks, 0).unwrap();
        e.enqueue((0..3).map(|_| one()).collect(), 0).unwrap();
        e.check_invariants().unwrap();
    }

    /// Regression: the rate window kept every call and counted them on each call, which
    /// made each ack O(calls in the window) and cut throughput by 4× under a breaker.
    #[test]
    fn breaker_window_is_bounded_and_slides() {
        let cfg = BreakerConfig {
            failure_rate: 0.5,
            window_ms: 1_000,
            min_calls: 10,
            ..BreakerConfig::default()
        };
        let mut f = SharedFlow::default();
        for i in 0..100_000u64 {
            f.record(&cfg, false, false, i / 10);
        }
        assert!(f.window.len() <= 51, "{} buckets", f.window.len());
        assert!(f.window_calls <= 10 * 1_020, "{} calls", f.window_calls); // window + one bucket
                                                                           // Old successes slide out: 1 s later, failures alone open it.
        for _ in 0..10 {
            f.record(&cfg, true, false, 12_000);
        }
        assert_eq!(
            f.breaker,
            Breaker::Open {
                until: 12_000 + cfg.cooldown_ms
            }
        );
    }

    #[test]
    fn breaker_opens_on_consecutive_failures_and_probes() {
        let cfg = BreakerConfig {
            failure_rate: 0.0,
            consecutive_failures: 3,
            cooldown_ms: 1_000,
            half_open_probes: 2,
            ..BreakerConfig::default()
        };
        let mut f = SharedFlow::default();
        f.record(&cfg, true, false, 0);
        f.record(&cfg, true, false, 0);
        f.record(&cfg, false, false, 0);
        assert_eq!(f.breaker, Breaker::Closed, "a success resets the count");
        for _ in 0..3 {
            f.record(&cfg, true, false, 10);
        }
        assert_eq!(f.breaker, Breaker::Open { until: 1_010 });
        assert_eq!(f.breaker_allowance(&cfg, 1_009), 0);
        assert_eq!(f.breaker_allowance(&cfg, 1_010), 2);
        f.record(&cfg, false, false, 1_020);
        f.record(&cfg, false, false, 1_030);
        assert_eq!(f.breaker, Breaker::Closed);
    }
}
