//! Groups: ordered groups (`group_concurrency` 1) and per-key concurrency (above 1); the
//! ready jobs of each group are re-derived whenever one of its jobs changes state.

use super::*;

/// One group's scheduling state. With the queue's `group_concurrency` at 1 (the default)
/// the group is ordered: one job at a time, in enqueue order. Above 1 it is a per-key
/// concurrency limit: up to that many of its jobs run at once, taken in enqueue order.
#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// Ids of the group's unfinished jobs (enqueue order is id order).
    pub(crate) pending: BTreeSet<u64>,
    /// The jobs running now (at most `group_concurrency`).
    pub(crate) active: Vec<u64>,
    /// The jobs in the ready index now (at most `group_concurrency` less the active ones).
    pub(crate) ready: Vec<u64>,
}

impl Engine {
    /// Re-establishes invariant 2 for one group: its ready job is its lowest-id unfinished
    /// job if that one is waiting and nothing of the group is active; otherwise none.
    pub(super) fn refresh_group(&mut self, q: u32, g: Arc<str>) {
        let key = (q, g);
        let limit = self.queues[q as usize].config.group_concurrency.max(1) as usize;
        let Some(gs) = self.groups.get(&key) else {
            return;
        };
        if gs.pending.is_empty() && gs.active.is_empty() {
            for old in gs.ready.clone() {
                let k = self.ready_key(old);
                self.queues[q as usize].ready.remove(&k);
            }
            self.groups.remove(&key);
            return;
        }
        let want = self.group_want(key.0, &key.1, gs, limit);
        let tokens = self.group_tokens(key.0, &key.1);
        if tokens < limit.saturating_sub(gs.active.len()) && want.len() == tokens {
            // Its per-key rate limit, not its concurrency, holds jobs back: look again when
            // the next token is due (if anything else waits).
            let more_waiting = gs
                .pending
                .iter()
                .filter(|&&id| {
                    self.jobs
                        .get(&id)
                        .is_some_and(|s| s.state == JobState::Waiting)
                })
                .nth(tokens)
                .is_some();
            if more_waiting {
                let due = self.group_token_due(key.0, &key.1, tokens);
                self.throttled.insert((due, key.0, key.1.clone()));
            }
        }
        let Some(gs) = self.groups.get(&key) else {
            return;
        };
        if want == gs.ready {
            return;
        }
        let have = gs.ready.clone();
        for &old in have.iter().filter(|id| !want.contains(id)) {
            let k = self.ready_key(old);
            self.queues[q as usize].ready.remove(&k);
        }
        for &new in want.iter().filter(|id| !have.contains(id)) {
            let k = self.ready_key(new);
            self.queues[q as usize].ready.insert(k);
        }
        if let Some(gs) = self.groups.get_mut(&key) {
            gs.ready = want;
        }
    }

    /// The jobs of a group that should be ready: with a limit of 1, its lowest-id unfinished
    /// job if that one is waiting and nothing runs (strict order); above 1, its lowest-id
    /// waiting jobs, as many as slots are free.
    pub(crate) fn group_want(
        &self,
        q: u32,
        g: &Arc<str>,
        gs: &GroupState,
        limit: usize,
    ) -> Vec<u64> {
        let slots = limit
            .saturating_sub(gs.active.len())
            .min(self.group_tokens(q, g));
        if slots == 0 {
            return Vec::new();
        }
        let waiting = |id: &u64| {
            self.jobs
                .get(id)
                .is_some_and(|s| s.state == JobState::Waiting)
        };
        if limit == 1 {
            return gs
                .pending
                .first()
                .copied()
                .filter(waiting)
                .into_iter()
                .collect();
        }
        gs.pending
            .iter()
            .copied()
            .filter(waiting)
            .take(slots)
            .collect()
    }

    /// Re-derives the ready jobs of every group of queue `q` (its group limit changed).
    pub(super) fn refresh_groups_of(&mut self, q: u32) {
        let keys: Vec<Arc<str>> = self
            .groups
            .keys()
            .filter(|(gq, _)| *gq == q)
            .map(|(_, g)| g.clone())
            .collect();
        for g in keys {
            self.refresh_group(q, g);
        }
    }
}
