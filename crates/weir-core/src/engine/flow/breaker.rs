//! Circuit breakers: closed (counting outcomes in a bucketed sliding window and in a run of
//! consecutive failures), open (handing out nothing until its cool-down ends), half open
//! (handing out a probe budget; success closes it, failure opens it again).

use super::*;

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Breaker {
    /// Handing out jobs, counting outcomes.
    #[default]
    Closed,
    /// Handing out nothing until this time.
    Open {
        /// When its cool-down ends, ms.
        until: u64,
    },
    /// Handing out at most `probes_left` more jobs; closes after `successes` reach the
    /// configured number of probes.
    HalfOpen {
        /// Probes it may still hand out.
        probes_left: u32,
        /// Probes that succeeded so far.
        successes: u32,
    },
}

impl Breaker {
    /// The state's name as the API reports it.
    pub fn name(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen { .. } => "half_open",
        }
    }
}

impl SharedFlow {
    /// Moves an open breaker whose cool-down passed to half open; returns how many jobs it
    /// lets through now.
    pub(super) fn breaker_allowance(&mut self, cfg: &BreakerConfig, now: u64) -> usize {
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

    pub(super) fn open(&mut self, cfg: &BreakerConfig, now: u64) {
        self.breaker = Breaker::Open {
            until: now.saturating_add(cfg.cooldown_ms),
        };
        self.clear_window();
    }

    pub(super) fn clear_window(&mut self) {
        self.window.clear();
        self.window_calls = 0;
        self.window_failures = 0;
        self.consecutive_failures = 0;
    }

    /// Adds a call to the window and drops buckets that left it.
    pub(super) fn window_add(&mut self, cfg: &BreakerConfig, failed: bool, now: u64) {
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
    pub(super) fn record(&mut self, cfg: &BreakerConfig, failed: bool, slow: bool, now: u64) {
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
