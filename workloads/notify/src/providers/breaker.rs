//! A provider's circuit breaker: closed while calls succeed; open after `failures`
//! consecutive failed calls, when messages go to the channel's next provider instead; after
//! `cooldown`, half-open: one probe call is let through, and its success closes the breaker
//! (traffic comes back) while its failure opens it for another cooldown.
//!
//! Each weir-notify process keeps its own breakers (a provider that fails for one fails for
//! all soon enough, and a breaker must react within one call, not one network round trip).

use super::BreakerConfig;
use parking_lot::Mutex;
use serde::Serialize;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls go elsewhere until the cooldown ends.
    Open,
    /// One probe call may go through.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    consecutive: u32,
    opened_at: Option<u64>,
    probing: bool,
    opens: u64,
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            inner: Mutex::new(Inner {
                consecutive: 0,
                opened_at: None,
                probing: false,
                opens: 0,
            }),
        }
    }

    fn state_of(&self, i: &Inner, now: u64) -> State {
        match i.opened_at {
            None => State::Closed,
            Some(t) if now < t.saturating_add(self.config.cooldown.0) => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: u64) -> State {
        self.state_of(&self.inner.lock(), now)
    }

    /// How many times it has opened.
    pub fn opens(&self) -> u64 {
        self.inner.lock().opens
    }

    /// Whether a call would be let through now (no probe is taken).
    pub fn would_allow(&self, now: u64) -> bool {
        let i = self.inner.lock();
        match self.state_of(&i, now) {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen => !i.probing,
        }
    }

    /// Takes the right to call now: always when closed, the one probe when half-open.
    pub fn acquire(&self, now: u64) -> bool {
        let mut i = self.inner.lock();
        match self.state_of(&i, now) {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen if i.probing => false,
            State::HalfOpen => {
                i.probing = true;
                true
            }
        }
    }

    /// Records a call that went through (closes a half-open breaker).
    pub fn success(&self) {
        let mut i = self.inner.lock();
        i.consecutive = 0;
        i.opened_at = None;
        i.probing = false;
    }

    /// Records a failed call at `now`.
    pub fn failure(&self, now: u64) {
        let mut i = self.inner.lock();
        i.consecutive = i.consecutive.saturating_add(1);
        let half_open = i.opened_at.is_some();
        if half_open || i.consecutive >= self.config.failures {
            if i.opened_at.is_none() || i.probing {
                i.opens += 1;
            }
            i.opened_at = Some(now);
        }
        i.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Millis;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures: 3,
            cooldown: Millis(1_000),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_once_after_the_cooldown() {
        let b = breaker();
        for t in 0..2 {
            b.failure(t);
        }
        assert_eq!(b.state(2), State::Closed);
        b.failure(2);
        assert_eq!(b.state(3), State::Open);
        assert!(!b.acquire(500));
        assert_eq!(b.state(1_002), State::HalfOpen);
        assert!(b.acquire(1_002), "one probe");
        assert!(!b.acquire(1_003), "only one probe at a time");
        b.success();
        assert_eq!(b.state(1_004), State::Closed);
        assert_eq!(b.opens(), 1);
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_cooldown() {
        let b = breaker();
        for t in 0..3 {
            b.failure(t);
        }
        assert!(b.acquire(1_500));
        b.failure(1_500);
        assert_eq!(b.state(2_000), State::Open);
        assert_eq!(b.state(2_500), State::HalfOpen);
        assert_eq!(b.opens(), 2);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker();
        b.failure(0);
        b.failure(1);
        b.success();
        b.failure(2);
        b.failure(3);
        assert_eq!(b.state(4), State::Closed);
    }
}
