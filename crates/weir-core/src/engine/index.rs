//! The indexes a job's state puts it in, and the one way a job changes state
//! ([`Engine::transition`]), which keeps counts, id sets and indexes in step.

use super::*;

/// Key of the per-queue ready index; see the module docs for the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadyKey {
    pub(super) rank: i64,
    pub(super) cost: u64,
    pub(super) id: u64,
}

impl Engine {
    pub(super) fn ready_key(&self, id: u64) -> ReadyKey {
        let s = &self.jobs[&id];
        let cfg = &self.queues[s.queue as usize].config;
        let epoch = s.run_at.checked_div(cfg.aging_ms).unwrap_or(0) as i64;
        ReadyKey {
            rank: epoch - i64::from(s.priority),
            cost: if cfg.order == Order::SmallestCost {
                s.cost
            } else {
                0
            },
            id,
        }
    }

    /// Counts job `id` in its queue's state: the count, the id set of its state, and, while
    /// it waits, the ready-time index. [`Self::untrack`] undoes it; every change of state or
    /// of a waiting job's ready time goes between the two.
    pub(crate) fn track(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let qs = &mut self.queues[s.queue as usize];
        qs.counts[s.state as usize] += 1;
        qs.ids[s.state as usize].insert(id);
        if s.state == JobState::Waiting {
            *qs.waiting_since.entry(s.run_at).or_default() += 1;
        }
    }

    /// Undoes [`Self::track`] for job `id` as it is now.
    pub(crate) fn untrack(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let qs = &mut self.queues[s.queue as usize];
        qs.counts[s.state as usize] -= 1;
        qs.ids[s.state as usize].remove(id);
        if s.state == JobState::Waiting {
            if let std::collections::btree_map::Entry::Occupied(mut e) =
                qs.waiting_since.entry(s.run_at)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Puts a job into the index its state calls for. The job must be in none.
    pub(super) fn place(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let (state, q) = (s.state, s.queue);
        match state {
            JobState::Scheduled | JobState::Failed => {
                self.scheduled.insert((s.run_at, id));
            }
            JobState::Waiting => match s.group().cloned() {
                Some(g) => self.refresh_group(q, g),
                None => {
                    let key = self.ready_key(id);
                    self.queues[q as usize].ready.insert(key);
                }
            },
            JobState::Active => {
                self.leases.insert((s.deadline, id));
            }
            JobState::Completed => {
                self.queues[q as usize]
                    .completed
                    .insert((s.finished_at, id));
            }
            JobState::Dead | JobState::Cancelled => {
                self.queues[q as usize].dead.insert((s.finished_at, id));
            }
        }
    }

    /// Takes a job out of the index its state put it in.
    pub(super) fn unplace(&mut self, id: u64) {
        let s = &self.jobs[&id];
        let (state, q) = (s.state, s.queue);
        match state {
            JobState::Scheduled | JobState::Failed => {
                self.scheduled.remove(&(s.run_at, id));
            }
            JobState::Waiting => match s.group().cloned() {
                Some(g) => {
                    let key = self.ready_key(id);
                    if let Some(gs) = self.groups.get_mut(&(q, g)) {
                        if let Some(i) = gs.ready.iter().position(|&r| r == id) {
                            gs.ready.swap_remove(i);
                            self.queues[q as usize].ready.remove(&key);
                        }
                    }
                }
                None => {
                    let key = self.ready_key(id);
                    self.queues[q as usize].ready.remove(&key);
                }
            },
            JobState::Active => {
                self.leases.remove(&(s.deadline, id));
            }
            JobState::Completed => {
                self.queues[q as usize]
                    .completed
                    .remove(&(s.finished_at, id));
            }
            JobState::Dead | JobState::Cancelled => {
                self.queues[q as usize].dead.remove(&(s.finished_at, id));
            }
        }
    }

    /// Moves a job to `to`: out of its old index, counts, state, into its new index. `edit`
    /// runs between the two, to change the fields the new index is keyed by.
    pub(super) fn transition(&mut self, id: u64, to: JobState, edit: impl FnOnce(&mut Slot)) {
        self.unplace(id);
        self.untrack(id);
        let Some(s) = self.jobs.get_mut(&id) else {
            return;
        };
        let from = s.state;
        let q = s.queue as usize;
        let group = s.group().cloned();
        s.state = to;
        edit(s);
        self.track(id);
        if let Some(g) = group {
            let key = (q as u32, g.clone());
            if let Some(gs) = self.groups.get_mut(&key) {
                if from == JobState::Active {
                    gs.active.retain(|&a| a != id);
                }
                if to == JobState::Active {
                    gs.active.push(id);
                }
                if to.is_terminal() {
                    gs.pending.remove(&id);
                } else {
                    gs.pending.insert(id);
                }
            } else if !to.is_terminal() {
                // A retried job whose group had emptied and been dropped.
                let gs = self.groups.entry(key).or_default();
                gs.pending.insert(id);
            }
            self.place(id);
            self.refresh_group(q as u32, g);
        } else {
            self.place(id);
        }
    }
}
