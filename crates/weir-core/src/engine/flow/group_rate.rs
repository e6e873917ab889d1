//! Per-key rate limits (`group_rate_limit`): a GCRA limiter per `(queue, group key)`, pruned
//! once its time has passed, and the groups it holds back re-examined when a token is due.

use super::*;

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
        let (t, tau) = super::gcra::gcra(&rl);
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
        let (t, _) = super::gcra::gcra(&rl);
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
