//! GCRA (the generic cell rate algorithm) for per-queue and per-key rate limits: one
//! arrival time per limiter, a burst of `burst`, then one job every `period / limit`.

use super::*;

/// GCRA parameters of a rate limit, µs: the emission interval and the burst tolerance.
pub fn gcra(rl: &RateLimit) -> (u64, u64) {
    let t = (rl.period_ms.saturating_mul(1000) / u64::from(rl.limit.max(1))).max(1);
    (t, t.saturating_mul(u64::from(rl.burst.max(1)) - 1))
}

/// Jobs a GCRA limiter at arrival time `tat` (µs) allows at `now` (ms).
pub fn gcra_allowance(tat: u64, rl: &RateLimit, now: u64) -> usize {
    let (t, tau) = gcra(rl);
    let now_us = now.saturating_mul(1000);
    let base = tat.max(now_us);
    if base > now_us.saturating_add(tau) {
        return 0;
    }
    ((now_us + tau - base) / t + 1).min(usize::MAX as u64) as usize
}

impl SharedFlow {
    /// Jobs the rate limit allows at `now` (without using them).
    pub(super) fn rate_allowance(&self, rl: &RateLimit, now: u64) -> usize {
        gcra_allowance(self.tat_us, rl, now)
    }

    /// When the next token is due, ms (only meaningful when none is available now).
    pub(super) fn rate_due(&self, rl: &RateLimit) -> u64 {
        let (_, tau) = gcra(rl);
        self.tat_us.saturating_sub(tau).div_ceil(1000)
    }

    pub(super) fn rate_consume(&mut self, rl: &RateLimit, n: usize, now: u64) {
        let (t, _) = gcra(rl);
        let base = self.tat_us.max(now.saturating_mul(1000));
        self.tat_us = base.saturating_add(t.saturating_mul(n as u64));
    }
}
