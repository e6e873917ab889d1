//! Flow control inside the engine: per-queue concurrency limits, rate limits (GCRA), circuit
//! breakers, load shedding by depth, weighted sharing of one fetch over several queues,
//! starvation detection, and the rates the scaling advisor reads.
//!
//! Enforced here, not by workers, so a limit holds across every worker and every fetch. All
//! of it reads the injected `now`, so tests move a clock and get the same result every run.
//! The runtime state (rate-limit arrival times, breaker state, rate meters) lives in memory
//! and restarts fresh with the process; the configuration is persisted with the queue.

use super::{Engine, QueueState};
use crate::config::{BreakerConfig, RateLimit};
use crate::job::JobState;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::sync::Arc;

/// Seconds of history the rate meters keep.
const METER_SECS: usize = 60;

/// Events per second over the last minute, in one-second buckets.
#[derive(Debug, Clone)]
pub(crate) struct RateMeter {
    buckets: [u32; METER_SECS],
    /// The second the newest bucket counts.
    head: u64,
    /// The first second anything was counted (rates average over less than a minute
    /// before a minute has passed).
    since: Option<u64>,
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter {
            buckets: [0; METER_SECS],
            head: 0,
            since: None,
        }
    }
}

impl RateMeter {
    fn roll(&mut self, sec: u64) {
        if sec <= self.head {
            return;
        }
        let steps = (sec - self.head).min(METER_SECS as u64);
        for i in 1..=steps {
            self.buckets[((self.head + i) % METER_SECS as u64) as usize] = 0;
        }
        self.head = sec;
    }

    pub(crate) fn add(&mut self, now_ms: u64, n: u32) {
        let sec = now_ms / 1000;
        self.roll(sec);
        self.since.get_or_insert(sec);
        if sec + (METER_SECS as u64) > self.head {
            let b = &mut self.buckets[(sec % METER_SECS as u64) as usize];
            *b = b.saturating_add(n);
        }
    }

    /// Average per second over the last minute (or since the first event, if sooner),
    /// counting whole seconds up to `now`.
    pub(crate) fn per_sec(&self, now_ms: u64) -> f64 {
        let Some(since) = self.since else {
            return 0.0;
        };
        let now = now_ms / 1000;
        let from = now.saturating_sub(METER_SECS as u64 - 1).max(since);
        if now < from {
            return 0.0;
        }
        let sum: u64 = (from..=now)
            .filter(|s| *s <= self.head && *s + METER_SECS as u64 > self.head)
            .map(|s| u64::from(self.buckets[(s % METER_SECS as u64) as usize]))
            .sum();
        sum as f64 / (now - from + 1) as f64
    }
}

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

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Breaker {
    /// Handing out jobs, counting outcomes.
    #[default]
    Closed,
    /// Handing out nothing until this time.
    Open { until: u64 },
    /// Handing out at most `probes_left` more jobs; closes after `successes` reach the
    /// configured number of probes.
    HalfOpen { probes_left: u32, successes: u32 },
}

impl Breaker {
    /// The state's name as the API reports it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen { .. } => "half_open",
        }
    }
}

/// One queue's flow-control runtime state.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowState {
    /// GCRA theoretical arrival time, µs.
    tat_us: u64,
    pub(crate) breaker: Breaker,
    /// Finished calls in the breaker's window, in buckets of a fiftieth of the window:
    /// `(bucket start, calls, failures)`. Bounded memory and O(1) per call at any rate.
    window: VecDeque<(u64, u32, u32)>,
    /// Sums over `window`.
    window_calls: u64,
    window_failures: u64,
    consecutive_failures: u32,
    pub(crate) enqueued: RateMeter,
    pub(crate) completed: RateMeter,
    pub(crate) failed: RateMeter,
    /// Since when the queue has been starving, if it is.
    pub(crate) starving_since: Option<u64>,
    /// When starvation was last evaluated (it costs a scan of the ready jobs).
    starvation_checked_at: u64,
}

/// GCRA parameters of a rate limit, µs.
fn gcra(rl: &RateLimit) -> (u64, u64) {
    let t = (rl.period_ms.saturating_mul(1000) / u64::from(rl.limit.max(1))).max(1);
    (t, t.saturating_mul(u64::from(rl.burst.max(1)) - 1))
}

impl FlowState {
    /// Jobs the rate limit allows at `now` (without using them).
    fn rate_allowance(&self, rl: &RateLimit, now: u64) -> usize {
        gcra_allowance(self.tat_us, rl, now)
    }

    /// When the next token is due, ms (only meaningful when none is available now).
    fn rate_due(&self, rl: &RateLimit) -> u64 {
        let (_, tau) = gcra(rl);
        self.tat_us.saturating_sub(tau).div_ceil(1000)
    }

    fn rate_consume(&mut self, rl: &RateLimit, n: usize, now: u64) {
        let (t, _) = gcra(rl);
        let base = self.tat_us.max(now.saturating_mul(1000));
        self.tat_us = base.saturating_add(t.saturating_mul(n as u64));
    }

    /// Moves an open breaker whose cool-down passed to half open; returns how many jobs it
    /// lets through now.
    fn breaker_allowance(&mut self, cfg: &BreakerConfig, now: u64) -> usize {
        if let Breaker::Open { until } = self.breaker {
            if now >= until {
                self.breaker = Breaker::HalfOpen {
                    probes_left: cfg.half_open_probes,
                    successes: 0,
                };
            }
        }
        match self.breaker {
            Breaker::Closed => usize::MAX,
            Breaker::Open { .. } => 0,
            Breaker::HalfOpen { probes_left, .. } => probes_left as usize,
        }
    }

    fn open(&mut self, cfg: &BreakerConfig, now: u64) {
        self.breaker = Breaker::Open {
            until: now.saturating_add(cfg.cooldown_ms),
        };
        self.clear_window();
    }

    fn clear_window(&mut self) {
        self.window.clear();
        self.window_calls = 0;
        self.window_failures = 0;
        self.consecutive_failures = 0;
    }

    /// Adds a call to the window and drops buckets that left it.
    fn window_add(&mut self, cfg: &BreakerConfig, failed: bool, now: u64) {
        let width = (cfg.window_ms / 50).max(1);
        let start = now - now % width;
        match self.window.back_mut() {
            Some(b) if b.0 == start => {
                b.1 += 1;
                b.2 += u32::from(failed);
            }
            _ => self.window.push_back((start, 1, u32::from(failed))),
        }
        self.window_calls += 1;
        self.window_failures += u64::from(failed);
        let from = now.saturating_sub(cfg.window_ms);
        while let Some(&(at, calls, failures)) = self.window.front() {
            if at + width > from {
                break;
            }
            self.window.pop_front();
            self.window_calls -= u64::from(calls);
            self.window_failures -= u64::from(failures);
        }
    }

    /// Counts one finished call. `failed` is a failed attempt; `slow` a completed call over
    /// the slow-call threshold (a failure for the rate trigger only).
    fn record(&mut self, cfg: &BreakerConfig, failed: bool, slow: bool, now: u64) {
        match self.breaker {
            Breaker::Open { .. } => {}
            Breaker::HalfOpen {
                probes_left,
                successes,
            } => {
                if failed || slow {
                    self.open(cfg, now);
                } else if successes + 1 >= cfg.half_open_probes {
                    self.breaker = Breaker::Closed;
                    self.clear_window();
                } else {
                    self.breaker = Breaker::HalfOpen {
                        probes_left,
                        successes: successes + 1,
                    };
                }
            }
            Breaker::Closed => {
                self.consecutive_failures = if failed {
                    self.consecutive_failures + 1
                } else {
                    0
                };
                if cfg.consecutive_failures > 0
                    && self.consecutive_failures >= cfg.consecutive_failures
                {
                    self.open(cfg, now);
                    return;
                }
                if cfg.failure_rate <= 0.0 {
                    return;
                }
                self.window_add(cfg, failed || slow, now);
                let calls = self.window_calls;
                if calls >= u64::from(cfg.min_calls.max(1))
                    && self.window_failures as f64 >= cfg.failure_rate * calls as f64
                {
                    self.open(cfg, now);
                }
            }
        }
    }
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
        let now = qs.flow.breaker;
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
            allow = allow.min(qs.flow.rate_allowance(rl, now));
        }
        if let Some(b) = qs.config.breaker {
            let before = qs.flow.breaker;
            allow = allow.min(qs.flow.breaker_allowance(&b, now));
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
            qs.flow.rate_consume(&rl, n, now);
        }
        if let Breaker::HalfOpen {
            probes_left,
            successes,
        } = qs.flow.breaker
        {
            qs.flow.breaker = Breaker::HalfOpen {
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
            let before = qs.flow.breaker;
            qs.flow.record(&b, false, slow, now);
            self.breaker_moved(q, before);
        }
    }

    /// Counts a failed attempt of queue `q`.
    pub(crate) fn flow_failed(&mut self, q: u32, now: u64) {
        let qs = &mut self.queues[q as usize];
        qs.flow.failed.add(now, 1);
        if let Some(b) = qs.config.breaker {
            let before = qs.flow.breaker;
            qs.flow.record(&b, true, false, now);
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
                    .filter(|rl| qs.flow.rate_allowance(rl, self.now) == 0)
                    .map(|rl| qs.flow.rate_due(rl));
                let breaker = match qs.flow.breaker {
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
                let rate = qs.config.rate_limit.as_ref().map(|rl| qs.flow.rate_due(rl));
                let breaker = match qs.flow.breaker {
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

    /// Re-evaluates starvation of queues that configure it, at most once a second each
    /// (it costs a scan of the queue's waiting jobs).
    pub(crate) fn check_starvation(&mut self, now: u64) {
        for q in 0..self.queues.len() {
            let qs = &self.queues[q];
            if qs.config.starvation_ms == 0
                || now.saturating_sub(qs.flow.starvation_checked_at) < 1_000
            {
                continue;
            }
            let threshold = qs.config.starvation_ms;
            let oldest = self.oldest_waiting(q as u32);
            let qs = &mut self.queues[q];
            qs.flow.starvation_checked_at = now;
            let starving = oldest.is_some_and(|t| now.saturating_sub(t) >= threshold);
            let was = qs.flow.starving_since.is_some();
            qs.flow.starving_since = match (starving, qs.flow.starving_since) {
                (true, None) => Some(now),
                (true, since) => since,
                (false, _) => None,
            };
            let queue = qs.name.to_string();
            match (was, starving) {
                (false, true) => self.flow_event(FlowEvent::Starving {
                    queue,
                    oldest_ms: oldest.map_or(0, |t| now.saturating_sub(t)),
                }),
                (true, false) => self.flow_event(FlowEvent::Recovered { queue }),
                _ => {}
            }
        }
    }
}

impl Engine {
    /// Jobs group `g` of queue `q` may start now by its per-key rate limit.
    pub(crate) fn group_tokens(&self, q: u32, g: &Arc<str>) -> usize {
        let Some(rl) = self.queues[q as usize].config.group_rate_limit else {
            return usize::MAX;
        };
        let tat = self.group_tats.get(&(q, g.clone())).copied().unwrap_or(0);
        gcra_allowance(tat, &rl, self.now)
    }

    /// When group `g` will have one token more than the `tokens` it has now, ms.
    pub(crate) fn group_token_due(&self, q: u32, g: &Arc<str>, tokens: usize) -> u64 {
        let Some(rl) = self.queues[q as usize].config.group_rate_limit else {
            return self.now + 1;
        };
        let tat = self.group_tats.get(&(q, g.clone())).copied().unwrap_or(0);
        let (t, tau) = gcra(&rl);
        tat.saturating_sub(tau)
            .saturating_add(t.saturating_mul(tokens as u64))
            .div_ceil(1000)
            .max(self.now + 1)
    }

    /// Uses one token of the per-key rate limit of job `id`'s group, if it has one.
    pub(crate) fn consume_group_token(&mut self, id: u64, now: u64) {
        let Some(s) = self.jobs.get(&id) else {
            return;
        };
        let q = s.queue;
        let Some(rl) = self.queues[q as usize].config.group_rate_limit else {
            return;
        };
        let Some(g) = s.group().cloned() else {
            return;
        };
        let (t, _) = gcra(&rl);
        let tat = self.group_tats.entry((q, g)).or_insert(0);
        *tat = (*tat).max(now.saturating_mul(1000)).saturating_add(t);
    }

    /// Drops limiter entries whose time has passed (equal to fresh ones), whenever the map
    /// has doubled since the last pruning: amortised O(1) per key, memory bounded by the keys
    /// used within their last period.
    pub(crate) fn prune_group_tats(&mut self, now: u64) {
        if self.group_tats.len() < 1_024 || self.group_tats.len() < 2 * self.group_tats_pruned {
            return;
        }
        let now_us = now.saturating_mul(1000);
        self.group_tats.retain(|_, tat| *tat > now_us);
        self.group_tats_pruned = self.group_tats.len();
    }
}

/// Jobs a GCRA limiter at arrival time `tat` (µs) allows at `now` (ms).
fn gcra_allowance(tat: u64, rl: &RateLimit, now: u64) -> usize {
    let (t, tau) = gcra(rl);
    let now_us = now.saturating_mul(1000);
    let base = tat.max(now_us);
    if base > now_us.saturating_add(tau) {
        return 0;
    }
    ((now_us + tau - base) / t + 1).min(usize::MAX as u64) as usize
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
        let mut f = FlowState::default();
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
        let mut f = FlowState::default();
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
        let mut f = FlowState::default();
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
