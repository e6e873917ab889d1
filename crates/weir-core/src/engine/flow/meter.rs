//! Rate meters: events per second over the last minute, in one-second buckets (what the
//! scaling advisor and load shedding read).

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
    pub(super) fn roll(&mut self, sec: u64) {
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
