//! The scaling advisor: how many workers a queue needs, and why.
//!
//! The baseline is `ceil(backlog × time per job ÷ drain window)` workers to drain what waits
//! within the window, plus `ceil(arrival rate × time per job)` to keep up with what keeps
//! coming. Reasons name what drives the figure or what is wrong, so an operator (or an
//! autoscaler) can tell "scale up" from "a downstream is failing".

use serde::Serialize;

/// What the advisor looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdvisorInput {
    /// Jobs waiting (ready or due soon).
    pub backlog: u64,
    /// Jobs running now.
    pub active: u64,
    /// Enqueues per second over the last minute.
    pub arrival_per_s: f64,
    /// Completions per second over the last minute.
    pub completed_per_s: f64,
    /// Failed attempts per second over the last minute.
    pub failed_per_s: f64,
    /// Mean run time of completed jobs, ms (`None` before the first completion).
    pub mean_run_ms: Option<f64>,
    /// 95th percentile of ready-to-start waits, ms (bucket bound).
    pub wait_p95_ms: Option<u64>,
    /// The target drain window, ms.
    pub drain_window_ms: u64,
}

/// The advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Workers (concurrent jobs) recommended.
    pub recommended_workers: u64,
    /// Why, in a line.
    pub reason: String,
}

/// Computes the advice. See the module docs.
pub fn advise(i: &AdvisorInput) -> Advice {
    let mut reasons = Vec::new();
    let Some(run_ms) = i.mean_run_ms.filter(|m| *m > 0.0) else {
        let n = if i.backlog > 0 {
            i.active.max(1)
        } else {
            i.active
        };
        return Advice {
            recommended_workers: n,
            reason: "no completed jobs yet to measure run time".into(),
        };
    };
    let run_s = run_ms / 1000.0;
    let window_s = (i.drain_window_ms.max(1) as f64) / 1000.0;
    let drain = (i.backlog as f64 * run_s / window_s).ceil();
    let keep_up = (i.arrival_per_s * run_s).ceil();
    let n = (drain + keep_up) as u64;
    let finished = i.completed_per_s + i.failed_per_s;
    if finished > 0.0 && i.failed_per_s / finished > 0.01 {
        reasons.push(format!(
            "error rate over 1 % ({:.1} %): check the downstream before adding workers",
            100.0 * i.failed_per_s / finished
        ));
    }
    if i.wait_p95_ms.is_some_and(|w| w > 2_000) {
        reasons.push("P95 wait over 2 s".to_string());
    }
    if drain > 0.0 {
        reasons.push(format!(
            "{} waiting jobs × {:.0} ms drain in {:.0} s with {} workers",
            i.backlog, run_ms, window_s, drain as u64
        ));
    }
    if keep_up > 0.0 {
        reasons.push(format!(
            "{:.1} arrivals/s × {:.0} ms need {} workers to keep up",
            i.arrival_per_s, run_ms, keep_up as u64
        ));
    }
    if reasons.is_empty() {
        reasons.push("idle".to_string());
    }
    Advice {
        recommended_workers: n,
        reason: reasons.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_backlog_times_run_time_over_window_plus_arrivals() {
        let a = advise(&AdvisorInput {
            backlog: 6_000,
            arrival_per_s: 50.0,
            completed_per_s: 50.0,
            mean_run_ms: Some(200.0),
            drain_window_ms: 60_000,
            ..Default::default()
        });
        // 6000 × 0.2 s / 60 s = 20, plus 50/s × 0.2 s = 10.
        assert_eq!(a.recommended_workers, 30);
        assert!(a.reason.contains("6000 waiting jobs"), "{}", a.reason);
        let sick = advise(&AdvisorInput {
            completed_per_s: 90.0,
            failed_per_s: 10.0,
            mean_run_ms: Some(10.0),
            wait_p95_ms: Some(5_000),
            drain_window_ms: 60_000,
            ..Default::default()
        });
        assert!(
            sick.reason.contains("error rate over 1 %"),
            "{}",
            sick.reason
        );
        assert!(sick.reason.contains("P95 wait over 2 s"), "{}", sick.reason);
        let fresh = advise(&AdvisorInput {
            backlog: 10,
            ..Default::default()
        });
        assert_eq!(fresh.recommended_workers, 1);
    }
}
