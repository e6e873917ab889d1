//! Starvation detection: a queue whose oldest waiting job has waited past `starvation_ms`
//! is flagged (an event, a metric) and its fetch share raised until it recovers.

use super::*;

impl Engine {
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
