//! A full consistency check of the engine's indexes against its jobs (the numbered
//! invariants in the module docs). `O(n log n)`: for tests, property tests and debug builds
//! (the embedded store runs it after each operation in debug builds).

use super::Engine;
use crate::job::JobState;

impl Engine {
    /// Checks every invariant, describing the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut counts = vec![[0u64; 7]; self.queues.len()];
        let mut ready_total = 0usize;
        let ready: Vec<std::collections::HashSet<u64>> = self
            .queues
            .iter()
            .map(|qs| qs.ready.iter().map(|k| k.id).collect())
            .collect();
        for (&id, s) in &self.jobs {
            counts[s.queue as usize][s.state as usize] += 1;
            let qs = &self.queues[s.queue as usize];
            let in_sched = self.scheduled.contains(&(s.run_at, id));
            let in_lease = s.state == JobState::Active && self.leases.contains(&(s.deadline, id));
            let in_ready = ready[s.queue as usize].contains(&id);
            let in_done = qs.completed.contains(&(s.finished_at, id));
            let in_dead = qs.dead.contains(&(s.finished_at, id));
            ready_total += usize::from(in_ready);
            let ok = match s.state {
                JobState::Scheduled | JobState::Failed => {
                    in_sched && !in_lease && !in_ready && !in_done && !in_dead
                }
                JobState::Active => in_lease && !in_sched && !in_ready && !in_done && !in_dead,
                JobState::Completed => in_done && !in_sched && !in_ready && !in_dead,
                JobState::Dead | JobState::Cancelled => {
                    in_dead && !in_sched && !in_ready && !in_done
                }
                JobState::Waiting => {
                    let held_back = match s.group() {
                        None => false,
                        Some(g) => {
                            let gs = self
                                .groups
                                .get(&(s.queue, g.clone()))
                                .ok_or_else(|| format!("job {id}: group {g} missing"))?;
                            !gs.ready.contains(&id)
                        }
                    };
                    in_ready != held_back && !in_sched && !in_done && !in_dead
                }
            };
            if !ok {
                return Err(format!(
                    "job {id} in state {} is in the wrong index",
                    s.state
                ));
            }
            if let Some(g) = s.group() {
                let gs = self.groups.get(&(s.queue, g.clone()));
                let pending = gs.is_some_and(|gs| gs.pending.contains(&id));
                if pending == s.state.is_terminal() {
                    return Err(format!(
                        "job {id}: group membership does not match its state"
                    ));
                }
                if s.state == JobState::Active && !gs.is_some_and(|g| g.active.contains(&id)) {
                    return Err(format!(
                        "job {id}: active but not among its group's active jobs"
                    ));
                }
            }
        }
        for (i, qs) in self.queues.iter().enumerate() {
            if qs.counts != counts[i] {
                return Err(format!(
                    "queue {}: counts {:?} != {:?}",
                    qs.name, qs.counts, counts[i]
                ));
            }
            // Invariant 5: the id sets and the ready-time index agree with the jobs.
            for st in JobState::ALL {
                let set = &qs.ids[st as usize];
                if set.len() != qs.counts[st as usize] {
                    return Err(format!(
                        "queue {}: {} ids in state {st} for {} jobs",
                        qs.name,
                        set.len(),
                        qs.counts[st as usize]
                    ));
                }
                if let Some(id) = set
                    .iter()
                    .find(|id| self.jobs.get(id).is_none_or(|s| s.state != st))
                {
                    return Err(format!("queue {}: job {id} in the id set of {st}", qs.name));
                }
            }
            let mut since = std::collections::BTreeMap::<u64, u32>::new();
            for id in &qs.ids[JobState::Waiting as usize] {
                *since.entry(self.jobs[&id].run_at).or_default() += 1;
            }
            if since != qs.waiting_since {
                return Err(format!(
                    "queue {}: the ready-time index does not match its waiting jobs",
                    qs.name
                ));
            }
        }
        if self.all_ids.len() != self.jobs.len() as u64
            || self.jobs.keys().any(|id| !self.all_ids.contains(*id))
        {
            return Err("the set of all ids does not match the jobs".into());
        }
        let ready_len: usize = self.queues.iter().map(|q| q.ready.len()).sum();
        if ready_len != ready_total {
            return Err(format!(
                "ready index holds {ready_len} keys for {ready_total} jobs"
            ));
        }
        if self.leases.len()
            != self
                .jobs
                .values()
                .filter(|s| s.state == JobState::Active)
                .count()
        {
            return Err("lease index has stale entries".into());
        }
        for ((q, g), gs) in &self.groups {
            let limit = self.queues[*q as usize].config.group_concurrency.max(1) as usize;
            let actives = gs
                .pending
                .iter()
                .filter(|&&id| {
                    self.jobs
                        .get(&id)
                        .is_some_and(|s| s.state == JobState::Active)
                })
                .count();
            if actives != gs.active.len() {
                return Err(format!(
                    "group {g}: {actives} active jobs, {} recorded",
                    gs.active.len()
                ));
            }
            if actives > limit {
                return Err(format!(
                    "group {g} of queue {q}: {actives} active jobs over its limit {limit}"
                ));
            }
            let want = self.group_want(*q, g, gs, limit);
            let (mut have, mut want) = (gs.ready.clone(), want);
            have.sort_unstable();
            want.sort_unstable();
            if have != want {
                return Err(format!("group {g}: ready {have:?}, expected {want:?}"));
            }
        }
        Ok(())
    }
}
