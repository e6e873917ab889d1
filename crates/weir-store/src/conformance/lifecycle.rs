//! Cases: a job's life through enqueue, fetch, heartbeat, ack, fail, cancel and retry, and
//! the refusals that change nothing.

use super::*;
use weir_core::{Backoff, Clock, Error, Fail, JobState};

pub async fn enqueue_and_read_back<S: Store>(s: &S, _c: &ManualClock) {
    let mut j = job("mail", 1);
    j.priority = 3;
    j.cost = 42;
    j.tags = vec!["a".into(), "b".into()];
    let ids = put(s, vec![j, job("mail", 2), job("mail", 3)]).await;
    assert_eq!(ids.len(), 3);
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "ids increase with enqueue order"
    );
    let got = s.job_get(ids[0]).await.unwrap().unwrap();
    assert_eq!(got.queue, "mail");
    assert_eq!(got.kind, "test");
    assert_eq!(got.payload.as_str(), r#"{"n":1}"#);
    assert_eq!(got.state, JobState::Waiting);
    assert_eq!((got.priority, got.cost, got.attempt), (3, 42, 0));
    assert_eq!(got.tags, vec!["a", "b"]);
    assert_eq!(got.created_at_ms, T0);
    let defaults = QueueConfig::default();
    assert_eq!(got.max_attempts, defaults.max_attempts);
    assert_eq!(got.timeout_ms, defaults.timeout_ms);
}

pub async fn bad_input_is_refused_and_changes_nothing<S: Store>(s: &S, _c: &ManualClock) {
    let big = "x".repeat(1 << 20);
    let cases: Vec<(&str, NewJob)> = vec![
        ("queue", job("", 1)),
        ("queue", job("has space", 1)),
        ("queue", job(&"q".repeat(129), 1)),
        ("kind", NewJob::new("q", "", Payload::parse("1").unwrap())),
        (
            "payload",
            NewJob::new("q", "k", Payload::json(&big).unwrap()),
        ),
        (
            "delay_ms",
            NewJob {
                delay_ms: Some(u64::MAX),
                ..job("q", 1)
            },
        ),
        (
            "delay_ms",
            NewJob {
                delay_ms: Some(1),
                run_at_ms: Some(T0),
                ..job("q", 1)
            },
        ),
        (
            "run_at",
            NewJob {
                run_at_ms: Some(u64::MAX),
                ..job("q", 1)
            },
        ),
        (
            "timeout_ms",
            NewJob {
                timeout_ms: Some(0),
                ..job("q", 1)
            },
        ),
        (
            "timeout_ms",
            NewJob {
                timeout_ms: Some(u64::MAX),
                ..job("q", 1)
            },
        ),
        (
            "max_attempts",
            NewJob {
                max_attempts: Some(0),
                ..job("q", 1)
            },
        ),
        (
            "max_attempts",
            NewJob {
                max_attempts: Some(u32::MAX),
                ..job("q", 1)
            },
        ),
        (
            "backoff",
            NewJob {
                backoff: Some(Backoff {
                    base_ms: 0,
                    cap_ms: 10,
                }),
                ..job("q", 1)
            },
        ),
        (
            "backoff",
            NewJob {
                backoff: Some(Backoff {
                    base_ms: 10,
                    cap_ms: 5,
                }),
                ..job("q", 1)
            },
        ),
        (
            "unique_window_ms",
            NewJob {
                unique_window_ms: Some(10),
                ..job("q", 1)
            },
        ),
        (
            "unique_key",
            NewJob {
                unique_key: Some(String::new()),
                ..job("q", 1)
            },
        ),
        (
            "group",
            NewJob {
                group: Some("g".repeat(10_000)),
                ..job("q", 1)
            },
        ),
        (
            "tags",
            NewJob {
                tags: vec![String::new()],
                ..job("q", 1)
            },
        ),
    ];
    for (field, j) in cases {
        match s
            .job_insert_many(JobInsertManyParams { jobs: vec![j] })
            .await
        {
            Err(Error::Invalid { field: f, .. } | Error::TooLarge { field: f, .. }) => {
                assert_eq!(f, field, "wrong field blamed")
            }
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    assert!(
        s.queue_list().await.unwrap().is_empty(),
        "a refused enqueue created a queue"
    );
    assert!(Payload::parse("{not json").is_err());

    // Bad queue configuration.
    let bad = QueueConfig {
        max_attempts: 0,
        ..Default::default()
    };
    let r = s
        .queue_config_set(QueueConfigSetParams {
            name: "q".into(),
            config: bad,
        })
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Invalid {
                field: "max_attempts",
                ..
            })
        ),
        "{r:?}"
    );
    let r = s
        .queue_config_set(QueueConfigSetParams {
            name: "bad name".into(),
            config: QueueConfig::default(),
        })
        .await;
    assert!(
        matches!(r, Err(Error::Invalid { field: "queue", .. })),
        "{r:?}"
    );
    assert!(s.queue_list().await.unwrap().is_empty());
}

pub async fn batch_enqueue_is_all_or_nothing<S: Store>(s: &S, _c: &ManualClock) {
    let r = s
        .job_insert_many(JobInsertManyParams {
            jobs: vec![job("q", 1), job("q", 2), job("", 3)],
        })
        .await;
    assert!(matches!(r, Err(Error::Invalid { field: "queue", .. })));
    assert!(
        fetch(s, &["q"], 10).await.is_empty(),
        "part of a refused batch was enqueued"
    );
    let page = s.job_list(weir_core::JobFilter::default()).await.unwrap();
    assert!(page.jobs.is_empty());
}

pub async fn unknown_ids_are_refused<S: Store>(s: &S, _c: &ManualClock) {
    let ghost = JobId(999_999);
    assert!(s.job_get(ghost).await.unwrap().is_none());
    let out = s
        .job_ack_many(JobAckManyParams {
            acks: vec![Ack {
                id: ghost,
                lease_id: 1,
                result: None,
            }],
        })
        .await
        .unwrap();
    assert_eq!(out.applied, 0);
    assert_eq!(out.rejected[0].reason, "job-not-found");
    assert!(matches!(
        s.job_cancel(JobCancelParams { id: ghost }).await,
        Err(Error::JobNotFound(_))
    ));
    assert!(matches!(
        s.job_retry(JobRetryParams { id: ghost }).await,
        Err(Error::JobNotFound(_))
    ));
    let hb = s
        .job_heartbeat(JobHeartbeatParams {
            id: ghost,
            lease_id: 1,
            progress: None,
        })
        .await;
    assert!(matches!(hb, Err(Error::JobNotFound(_))));
    assert!(fetch(s, &["no-such-queue"], 5).await.is_empty());
}

pub async fn fetch_ack_completes_with_result<S: Store>(s: &S, c: &ManualClock) {
    let id = put1(s, job("q", 7)).await;
    let got = fetch(s, &["q"], 10).await;
    assert_eq!(got.len(), 1);
    let f = &got[0];
    assert_eq!((f.id, f.attempt, n_of(f)), (id, 1, 7));
    assert_eq!(f.lease_deadline_ms, T0 + QueueConfig::default().timeout_ms);
    assert_eq!(state(s, id).await, JobState::Active);
    assert!(
        fetch(s, &["q"], 10).await.is_empty(),
        "an active job was handed out twice"
    );
    c.advance(250);
    let out = ack(s, f, Some(serde_json::json!({"ok": true}))).await;
    assert_eq!(out.applied, 1);
    let done = s.job_get(id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result.unwrap().as_str(), r#"{"ok":true}"#);
    assert_eq!(done.finished_at_ms, Some(T0 + 250));
    // An ack is applied once: a second one is refused.
    let again = ack(s, f, None).await;
    assert_eq!(
        (again.applied, again.rejected[0].reason),
        (0, "lease-expired")
    );
    assert!(fetch(s, &["q"], 10).await.is_empty());
}

pub async fn ack_under_stale_or_foreign_lease_is_refused<S: Store>(s: &S, c: &ManualClock) {
    let id = put1(
        s,
        NewJob {
            timeout_ms: Some(1_000),
            ..job("q", 1)
        },
    )
    .await;
    let first = fetch(s, &["q"], 1).await.remove(0);
    let foreign = FetchedJob {
        lease_id: first.lease_id ^ 0x5555,
        ..first.clone()
    };
    let out = ack(s, &foreign, None).await;
    assert_eq!(out.rejected[0].reason, "lease-mismatch");
    assert_eq!(
        state(s, id).await,
        JobState::Active,
        "a refused ack changed the job"
    );

    c.advance(1_000); // the lease ends exactly now
    let out = ack(s, &first, None).await;
    assert_eq!(out.rejected[0].reason, "lease-expired");
    let second = fetch(s, &["q"], 1).await.remove(0);
    assert_eq!((second.id, second.attempt), (id, 2));
    assert_ne!(second.lease_id, first.lease_id);
    let out = fail(s, &first, true).await;
    assert_eq!(out.applied, 0, "a fail under the old lease was applied");
    assert_eq!(ack(s, &second, None).await.applied, 1);
    assert_eq!(state(s, id).await, JobState::Completed);
}

pub async fn heartbeat_extends_lease_and_records_progress<S: Store>(s: &S, c: &ManualClock) {
    let id = put1(
        s,
        NewJob {
            timeout_ms: Some(1_000),
            ..job("q", 1)
        },
    )
    .await;
    let f = fetch(s, &["q"], 1).await.remove(0);
    c.advance(800);
    let deadline = s
        .job_heartbeat(JobHeartbeatParams {
            id,
            lease_id: f.lease_id,
            progress: Some(Payload::json(&serde_json::json!({"pct": 50})).unwrap()),
        })
        .await
        .unwrap();
    assert_eq!(deadline, T0 + 800 + 1_000);
    c.advance(800); // past the first deadline, inside the extended one
    assert!(
        fetch(s, &["q"], 1).await.is_empty(),
        "a heartbeated job was handed out again"
    );
    let got = s.job_get(id).await.unwrap().unwrap();
    assert_eq!(got.progress.unwrap().as_str(), r#"{"pct":50}"#);
    assert_eq!(got.lease_deadline_ms, Some(deadline));
    c.advance(400);
    let hb = s
        .job_heartbeat(JobHeartbeatParams {
            id,
            lease_id: f.lease_id,
            progress: None,
        })
        .await;
    assert!(matches!(hb, Err(Error::LeaseExpired(_))), "{hb:?}");
    let hb = s
        .job_heartbeat(JobHeartbeatParams {
            id,
            lease_id: 12345,
            progress: None,
        })
        .await;
    assert!(matches!(hb, Err(Error::LeaseMismatch(_))), "{hb:?}");
}

pub async fn expired_lease_returns_job_and_counts_attempt<S: Store>(s: &S, c: &ManualClock) {
    let id = put1(
        s,
        NewJob {
            timeout_ms: Some(500),
            max_attempts: Some(2),
            ..job("q", 1)
        },
    )
    .await;
    let a1 = fetch(s, &["q"], 1).await.remove(0);
    assert_eq!(a1.attempt, 1);
    c.advance(500);
    let a2 = fetch(s, &["q"], 1).await.remove(0);
    assert_eq!((a2.id, a2.attempt), (id, 2));
    c.advance(500);
    assert!(
        fetch(s, &["q"], 1).await.is_empty(),
        "a job with no attempts left ran again"
    );
    let dead = s.job_get(id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.errors.len(), 2);
    assert!(dead.errors.iter().all(|e| e.message == "lease expired"));
    assert_eq!(dead.errors[1].attempt, 2);
}

pub async fn fail_backs_off_with_jitter_then_dies<S: Store>(s: &S, c: &ManualClock) {
    let b = Backoff {
        base_ms: 1_000,
        cap_ms: 1_500,
    };
    let id = put1(
        s,
        NewJob {
            max_attempts: Some(3),
            backoff: Some(b),
            ..job("q", 1)
        },
    )
    .await;
    for attempt in 1..=2u32 {
        let f = fetch(s, &["q"], 1).await.remove(0);
        assert_eq!(f.attempt, attempt);
        let now = c.now_ms();
        assert_eq!(fail(s, &f, true).await.applied, 1);
        let j = s.job_get(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Failed);
        let ceiling = b.ceiling_ms(attempt);
        assert!(
            j.run_at_ms >= now && j.run_at_ms <= now + ceiling,
            "delay beyond backoff ceiling"
        );
        if j.run_at_ms > now {
            assert!(
                fetch(s, &["q"], 1).await.is_empty(),
                "ran before its backoff passed"
            );
        }
        c.set(j.run_at_ms);
    }
    let f = fetch(s, &["q"], 1).await.remove(0);
    assert_eq!(f.attempt, 3);
    fail(s, &f, true).await;
    let j = s.job_get(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Dead);
    let msgs: Vec<_> = j
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        vec![
            (1, "boom on attempt 1"),
            (2, "boom on attempt 2"),
            (3, "boom on attempt 3")
        ]
    );
}

pub async fn fail_without_retry_dies_at_once<S: Store>(s: &S, _c: &ManualClock) {
    let id = put1(s, job("q", 1)).await;
    let f = fetch(s, &["q"], 1).await.remove(0);
    fail(s, &f, false).await;
    assert_eq!(state(s, id).await, JobState::Dead);
    assert!(fetch(s, &["q"], 1).await.is_empty());
}

pub async fn batch_ack_applies_good_and_rejects_bad<S: Store>(s: &S, _c: &ManualClock) {
    put(s, (0..4).map(|n| job("q", n)).collect()).await;
    let got = fetch(s, &["q"], 4).await;
    assert_eq!(got.len(), 4);
    let acks = vec![
        Ack {
            id: got[0].id,
            lease_id: got[0].lease_id,
            result: None,
        },
        Ack {
            id: got[1].id,
            lease_id: got[1].lease_id + 1,
            result: None,
        },
        Ack {
            id: JobId(424_242),
            lease_id: 1,
            result: None,
        },
    ];
    let out = s.job_ack_many(JobAckManyParams { acks }).await.unwrap();
    assert_eq!(out.applied, 1);
    let reasons: Vec<_> = out.rejected.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, vec!["lease-mismatch", "job-not-found"]);
    assert_eq!(state(s, got[1].id).await, JobState::Active);
    let fails = vec![
        Fail {
            id: got[2].id,
            lease_id: got[2].lease_id,
            error: "x".into(),
            retry: false,
        },
        Fail {
            id: got[0].id,
            lease_id: got[0].lease_id,
            error: "late".into(),
            retry: false,
        },
    ];
    let out = s.job_fail_many(JobFailManyParams { fails }).await.unwrap();
    assert_eq!(out.applied, 1);
    assert_eq!(
        state(s, got[0].id).await,
        JobState::Completed,
        "a refused fail changed a completed job"
    );
    assert_eq!(state(s, got[2].id).await, JobState::Dead);
    // A result over the payload limit is refused and the job stays active.
    let big = Payload::json(&"y".repeat(1 << 20)).unwrap();
    let out = s
        .job_ack_many(JobAckManyParams {
            acks: vec![Ack {
                id: got[3].id,
                lease_id: got[3].lease_id,
                result: Some(big),
            }],
        })
        .await
        .unwrap();
    assert_eq!(out.rejected[0].reason, "payload-too-large");
    assert_eq!(state(s, got[3].id).await, JobState::Active);
}

pub async fn cancel_and_retry<S: Store>(s: &S, _c: &ManualClock) {
    let ids = put(s, vec![job("q", 1), job("q", 2), job("q", 3)]).await;
    s.job_cancel(JobCancelParams { id: ids[0] }).await.unwrap();
    assert_eq!(state(s, ids[0]).await, JobState::Cancelled);
    let f = fetch(s, &["q"], 1).await.remove(0);
    assert_eq!(f.id, ids[1], "a cancelled job was handed out");
    // Cancelling an active job revokes its lease.
    s.job_cancel(JobCancelParams { id: ids[1] }).await.unwrap();
    assert_eq!(ack(s, &f, None).await.applied, 0);
    assert_eq!(state(s, ids[1]).await, JobState::Cancelled);
    let again = s.job_cancel(JobCancelParams { id: ids[1] }).await;
    assert!(
        matches!(again, Err(Error::InvalidState { op: "cancel", .. })),
        "{again:?}"
    );

    // A dead job retried runs again with fresh attempts.
    let f3 = fetch(s, &["q"], 1).await.remove(0);
    fail(s, &f3, false).await;
    assert_eq!(state(s, ids[2]).await, JobState::Dead);
    s.job_retry(JobRetryParams { id: ids[2] }).await.unwrap();
    let j = s.job_get(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempt, j.errors.len()),
        (JobState::Waiting, 0, 1)
    );
    let f3 = fetch(s, &["q"], 1).await.remove(0);
    assert_eq!((f3.id, f3.attempt), (ids[2], 1));
    ack(s, &f3, None).await;
    let r = s.job_retry(JobRetryParams { id: ids[2] }).await;
    assert!(
        matches!(
            r,
            Err(Error::InvalidState {
                op: "retry",
                state: "completed",
                ..
            })
        ),
        "{r:?}"
    );
    // A cancelled job can be retried too.
    s.job_retry(JobRetryParams { id: ids[0] }).await.unwrap();
    assert_eq!(fetch(s, &["q"], 1).await[0].id, ids[0]);
}

pub async fn release_returns_the_job_without_counting_the_attempt<S: Store>(
    s: &S,
    _c: &ManualClock,
) {
    let id = put1(
        s,
        NewJob {
            group: Some("g".into()),
            ..job("q", 1)
        },
    )
    .await;
    let second = put1(
        s,
        NewJob {
            group: Some("g".into()),
            ..job("q", 2)
        },
    )
    .await;
    let f = fetch(s, &["q"], 10).await;
    assert_eq!(f.len(), 1, "the group runs one at a time");
    let foreign = s
        .job_release(JobReleaseParams {
            id,
            lease_id: f[0].lease_id ^ 1,
        })
        .await;
    assert!(
        matches!(foreign, Err(Error::LeaseMismatch(_))),
        "{foreign:?}"
    );
    assert_eq!(
        state(s, id).await,
        JobState::Active,
        "a refused release changes nothing"
    );
    s.job_release(JobReleaseParams {
        id,
        lease_id: f[0].lease_id,
    })
    .await
    .unwrap();
    let j = s.job_get(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Waiting, 0));
    assert!(j.errors.is_empty());
    // The old lease is dead; the job is handed out again first, as attempt 1, and its
    // group still holds the second job back.
    assert_eq!(ack(s, &f[0], None).await.applied, 0);
    let again = fetch(s, &["q"], 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (id, 1));
    assert_eq!(state(s, second).await, JobState::Waiting);
}
