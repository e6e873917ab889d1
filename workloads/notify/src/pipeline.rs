//! The pipeline: a trigger becomes messages, each message runs its workflow's steps, and
//! each send step becomes a delivery in a provider's queue. Every stage is a Weir job:
//!
//! | queue | kind | what one job does |
//! |---|---|---|
//! | `notify.fanout` | `fanout` | one page of a topic's subscribers → their messages and a `run` job; then the next page |
//! | `notify.run` | `run` | runs up to `run_batch` messages of one trigger from one step until each waits or ends |
//! | `notify.digest` | `digest` | closes a digest window (delayed to its end) and runs its leader on |
//! | `notify.send.<provider>` | `send` | up to `send_batch` deliveries: provider calls in batches, failover, deferral |
//!
//! # Exactly-once where it matters
//! A job may run twice (a worker dies, its lease expires). Each job therefore works in two
//! phases: it first writes what it decided (messages, deliveries, activity) and persists
//! that; then it derives the jobs to enqueue *from those records* and enqueues them with
//! unique keys built from the records (`send:{trigger}:{pc}:{provider}:{first}`), so a second
//! run finds its messages already past its step, derives the same jobs, and Weir's unique keys
//! turn the repeat enqueues into no-ops. A delivery carries a route number; a job's item whose
//! route is not the delivery's current one is stale (the delivery moved to another job: a
//! failover, a deferral) and is not sent. What can still repeat is a provider call that was
//! in flight when the worker died; every call carries the deliveries' keys
//! (`Idempotency-Key`, SendGrid `custom_args`, FCM `data`, SMTP `Message-ID`) for providers
//! that deduplicate.
//!
//! # Priorities
//! Transactional workflows' jobs carry Weir priority 100, bulk ones 0, in the same queues:
//! the next free worker slot takes a password reset before any of a million queued newsletter
//! jobs (Weir ages waiting jobs one step a minute, so bulk work is never starved for long).

use crate::model::{Channel, Preferences, Subscriber};
use crate::providers::{
    http::fcm_groups, CallResult, ItemResult, Kind, Outgoing, Provider, Providers,
};
use crate::render::{Lazy, Part, Renderer, SubscriberValue};
use crate::store::{
    Content, Delivery, DeliveryState, DeliveryStatus, Digest, Event, Message, MsgId, RunMark,
    StateUpdate, Status, Store, StoreError, Trigger, Wait,
};
use crate::workflow::{pick_locale, Class, Op, Workflow};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::to_raw_value;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_api::NewJobBody;
use weir_client::{Client, HandlerError, HandlerResult, JobContext};

/// Queue names, after the deployment's prefix (`notify` unless `[pipeline] queue_prefix`
/// says otherwise): `{prefix}.fanout`, `{prefix}.run`, `{prefix}.run.tx` (transactional runs:
/// a worker pool of its own takes from it, so a password reset's run never waits for a slot
/// behind bulk runs), `{prefix}.digest` and `{prefix}.send.{provider}`.
const FANOUT: &str = "fanout";
const RUN: &str = "run";
const RUN_TX: &str = "run.tx";
const DIGEST: &str = "digest";

/// How long Weir keeps a pipeline job's unique key after the job finished: longer than any
/// re-delivery of the job that enqueued it can come.
const UNIQUE_WINDOW_MS: u64 = 3_600_000;

/// Tuning.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The first part of every queue name: deployments with different prefixes share one
    /// Weir server without taking each other's jobs.
    pub queue_prefix: String,
    /// Messages per run job (and per fan-out page).
    pub run_batch: usize,
    /// Deliveries per send job (providers with a rate limit: one call's worth, so that Weir's
    /// rate limit on the queue counts calls).
    pub send_batch: usize,
    /// Attempts of a send job before its deliveries go dead (the dead-letter queue).
    pub send_attempts: u32,
    /// First retry delay of a send job, ms (exponential with full jitter after).
    pub retry_base_ms: u64,
    /// Longest retry delay, ms.
    pub retry_cap_ms: u64,
    /// 429s one delivery may get before it counts as a failure.
    pub max_deferrals: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue_prefix: "notify".into(),
            run_batch: 500,
            send_batch: 500,
            send_attempts: 8,
            retry_base_ms: 1_000,
            retry_cap_ms: 300_000,
            max_deferrals: 50,
        }
    }
}

/// The compiled workflows and their render environment.
pub struct Registry {
    /// By id.
    pub workflows: BTreeMap<String, Arc<Workflow>>,
    /// Ids defined in the config file (read-only through the API).
    pub from_file: std::collections::BTreeSet<String>,
    /// Their templates.
    pub renderer: Renderer,
}

impl Registry {
    /// A registry of these workflows.
    pub fn new(
        workflows: Vec<Workflow>,
        from_file: std::collections::BTreeSet<String>,
    ) -> Registry {
        let renderer = Renderer::new(workflows.iter());
        Registry {
            workflows: workflows
                .into_iter()
                .map(|w| (w.def.id.clone(), Arc::new(w)))
                .collect(),
            from_file,
            renderer,
        }
    }
}

/// Everything the pipeline and the API share.
pub struct Notify {
    /// The product's records.
    pub store: Store,
    /// Weir.
    pub weir: Client,
    /// The providers.
    pub providers: Providers,
    /// Tuning.
    pub settings: Settings,
    registry: parking_lot::RwLock<Arc<Registry>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fan-out page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutJob {
    /// The trigger.
    pub trigger: u64,
    /// The topic.
    pub topic: String,
    /// The page's number, from 0.
    pub page: u32,
    /// The last subscriber id of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The number of this page's first message.
    pub first_n: u32,
}

/// A run of some of a trigger's messages from one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunJob {
    /// The trigger.
    pub trigger: u64,
    /// The step they start at.
    pub pc: u16,
    /// The messages' numbers.
    pub ns: Vec<u32>,
    /// At step 0, their subscribers: a message a fan-out did not record yet is made by
    /// its run (one write per message instead of two).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subs: Vec<String>,
}

/// A digest window to close.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestJob {
    /// The window's key.
    pub key: String,
    /// The message that opened it.
    pub leader: MsgId,
}

/// Deliveries for one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendJob {
    /// The provider.
    pub provider: String,
    /// Providers this job's deliveries already failed over from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<String>,
    /// The deliveries.
    pub items: Vec<SendItem>,
}

/// One delivery in a send job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SendItem {
    /// Its message.
    pub m: MsgId,
    /// Its send step.
    pub pc: u16,
    /// Its address's index (a push step sends to each device).
    pub idx: u8,
    /// The route it was moved to this job under.
    pub route: u32,
}

fn storage(e: StoreError) -> HandlerError {
    HandlerError::retry(e.to_string())
}

fn raw<T: Serialize>(v: &T) -> Result<Box<serde_json::value::RawValue>, HandlerError> {
    to_raw_value(v).map_err(|e| HandlerError::fatal(format!("encoding a job: {e}")))
}

/// A job to enqueue, with the unique key that makes a repeat a no-op.
struct Out {
    queue: String,
    kind: &'static str,
    payload: Box<serde_json::value::RawValue>,
    key: String,
    priority: i32,
    run_at: Option<u64>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
}

impl Notify {
    /// Ties the parts together.
    pub fn new(
        store: Store,
        weir: Client,
        providers: Providers,
        registry: Registry,
        settings: Settings,
    ) -> Notify {
        Notify {
            store,
            weir,
            providers,
            settings,
            registry: parking_lot::RwLock::new(Arc::new(registry)),
        }
    }

    /// The current workflows.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }

    /// Replaces the workflows.
    pub fn set_registry(&self, r: Registry) {
        *self.registry.write() = Arc::new(r);
    }

    /// The queue `name` of this deployment.
    pub fn queue(&self, name: &str) -> String {
        format!("{}.{name}", self.settings.queue_prefix)
    }

    /// A provider's queue.
    pub fn send_queue(&self, p: &crate::providers::ProviderConfig) -> String {
        self.queue(&format!("send.{}", p.id))
    }

    /// The run queue for a class.
    fn run_queue(&self, class: Class) -> String {
        self.queue(match class {
            Class::Transactional => RUN_TX,
            Class::Bulk => RUN,
        })
    }

    /// Every queue this pipeline uses (the run queues, then one per provider).
    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = [FANOUT, RUN, RUN_TX, DIGEST]
            .iter()
            .map(|n| self.queue(n))
            .collect();
        q.extend(
            self.providers
                .all()
                .iter()
                .map(|p| self.send_queue(&p.config)),
        );
        q
    }

    /// Sets each provider queue's Weir flow control from the provider's config: its rate
    /// limit (calls per period across every process) and concurrency; and the send queues'
    /// retry policy.
    pub async fn configure_queues(&self) -> Result<(), weir_client::ClientError> {
        for p in self.providers.all() {
            let c = &p.config;
            let patch = weir_api::QueueConfigPatch {
                concurrency: Some(c.concurrency),
                max_attempts: Some(self.settings.send_attempts),
                backoff: Some(weir_api::BackoffBody {
                    base_ms: self.settings.retry_base_ms,
                    cap_ms: self.settings.retry_cap_ms,
                }),
                rate_limit: Some(match &c.rate_limit {
                    Some(r) => weir_api::RateLimitBody {
                        limit: r.limit,
                        period_ms: r.period.0,
                        burst: r.burst,
                    },
                    None => weir_api::RateLimitBody {
                        limit: 0,
                        period_ms: 1_000,
                        burst: None,
                    },
                }),
                ..Default::default()
            };
            self.weir.configure(&self.send_queue(c), &patch).await?;
        }
        Ok(())
    }

    async fn enqueue(&self, outs: Vec<Out>) -> Result<(), HandlerError> {
        if outs.is_empty() {
            return Ok(());
        }
        let jobs: Vec<NewJobBody> = outs
            .into_iter()
            .map(|o| {
                let mut j = NewJobBody::new(o.queue, o.kind, o.payload);
                j.priority = Some(o.priority);
                j.unique_key = Some(o.key);
                j.unique_window_ms = Some(UNIQUE_WINDOW_MS);
                j.run_at = o.run_at;
                j.max_attempts = o.max_attempts;
                j.timeout_ms = o.timeout_ms;
                j
            })
            .collect();
        for chunk in jobs.chunks(1_000) {
            self.weir
                .enqueue_patiently(chunk.to_vec(), std::time::Duration::from_secs(300))
                .await
                .map_err(|e| HandlerError::retry(format!("enqueue: {e}")))?;
        }
        Ok(())
    }

    /// Writes the messages a run decided (with `new` naming those it made) under its mark,
    /// and persists; `false` when another attempt of the same job had already written them
    /// (see [`Store::write_run`]).
    async fn commit_run(
        &self,
        mark: RunMark,
        msgs: Vec<Message>,
        new: Vec<MsgId>,
    ) -> Result<bool, HandlerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let wrote = store.write_run(mark, msgs, &new)?;
            if wrote {
                store.persist()?;
            }
            Ok(wrote)
        })
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))?
        .map_err(storage)
    }

    /// Writes a send job's delivery states and persists; says which were written (see
    /// [`Store::write_states`]).
    async fn commit_states(&self, updates: Vec<StateUpdate>) -> Result<Vec<bool>, HandlerError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let written = store.write_states(updates)?;
            store.persist()?;
            Ok(written)
        })
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))?
        .map_err(storage)
    }

    // --- trigger -----------------------------------------------------------------------

    /// Starts the messages of a trigger to listed subscribers: enqueues their runs (used by
    /// `POST /v1/trigger`, which also `record`s them first so that their ids can be looked
    /// up at once, and by a fan-out page, which leaves that to the runs). Messages already
    /// there are kept as they are (a repeat after a crash). Returns their ids.
    pub async fn start_messages(
        &self,
        t: &Trigger,
        subs: &[String],
        first_n: u32,
        record: bool,
    ) -> Result<Vec<MsgId>, HandlerError> {
        let now = now_ms();
        let ids: Vec<MsgId> = (0..subs.len())
            .map(|i| MsgId {
                trigger: t.id,
                n: first_n + i as u32,
            })
            .collect();
        if record {
            let fresh: Vec<Message> = ids
                .iter()
                .zip(subs)
                .map(|(id, s)| new_message(t, *id, s, now))
                .collect();
            let mark = RunMark::Created {
                trigger: t.id,
                first: first_n,
            };
            // A repeat (the same trigger taken over after a crash) keeps what is there.
            self.commit_run(mark, fresh, ids.clone()).await?;
        }
        let batch = self.settings.run_batch.max(1);
        let outs = ids
            .chunks(batch)
            .zip(subs.chunks(batch))
            .map(|(c, s)| {
                Ok(Out {
                    queue: self.run_queue(t.class),
                    kind: "run",
                    payload: raw(&RunJob {
                        trigger: t.id,
                        pc: 0,
                        ns: c.iter().map(|m| m.n).collect(),
                        subs: s.to_vec(),
                    })?,
                    key: format!("run:{}:0:{}", t.id, c[0].n),
                    priority: t.class.priority(),
                    run_at: None,
                    max_attempts: None,
                    timeout_ms: None,
                })
            })
            .collect::<Result<Vec<_>, HandlerError>>()?;
        self.enqueue(outs).await?;
        Ok(ids)
    }

    /// Enqueues the first fan-out page of a topic trigger.
    pub async fn start_fanout(&self, t: &Trigger, topic: &str) -> Result<(), HandlerError> {
        let job = FanoutJob {
            trigger: t.id,
            topic: topic.to_string(),
            page: 0,
            after: None,
            first_n: 0,
        };
        self.enqueue(vec![Out {
            queue: self.queue(FANOUT),
            kind: "fanout",
            payload: raw(&job)?,
            key: format!("fan:{}:0", t.id),
            priority: t.class.priority(),
            run_at: None,
            max_attempts: None,
            timeout_ms: None,
        }])
        .await
    }

    /// One fan-out page.
    pub async fn fanout(&self, ctx: JobContext) -> HandlerResult {
        let job: FanoutJob = ctx.payload()?;
        let Some(mut t) = self.store.trigger(job.trigger).map_err(storage)? else {
            return Err(HandlerError::fatal(format!(
                "trigger {} is gone",
                job.trigger
            )));
        };
        let page = self.settings.run_batch.max(1);
        let subs = self
            .store
            .members(&job.topic, job.after.as_deref(), page)
            .map_err(storage)?;
        let made = job.first_n + subs.len() as u32;
        // The trigger's count first, so that it never lags what has been sent.
        t.messages = t.messages.max(made);
        t.fanned_out = subs.len() < page;
        self.store.put_trigger(&t).map_err(storage)?;
        self.store.persist().map_err(storage)?;
        if !subs.is_empty() {
            self.start_messages(&t, &subs, job.first_n, false).await?;
        }
        if subs.len() == page {
            let next = FanoutJob {
                trigger: t.id,
                topic: job.topic.clone(),
                page: job.page + 1,
                after: subs.last().cloned(),
                first_n: made,
            };
            self.enqueue(vec![Out {
                queue: self.queue(FANOUT),
                kind: "fanout",
                payload: raw(&next)?,
                key: format!("fan:{}:{}", t.id, next.page),
                priority: t.class.priority(),
                run_at: None,
                max_attempts: None,
                timeout_ms: None,
            }])
            .await?;
        }
        Ok(None)
    }

    // --- runs --------------------------------------------------------------------------

    /// A run job.
    pub async fn run(&self, ctx: JobContext) -> HandlerResult {
        let job: RunJob = ctx.payload()?;
        let ids: Vec<MsgId> = job
            .ns
            .iter()
            .map(|&n| MsgId {
                trigger: job.trigger,
                n,
            })
            .collect();
        self.run_messages(job.trigger, job.pc, &ids, &job.subs, None, Vec::new())
            .await?;
        Ok(None)
    }

    /// Runs `ids` (messages of `trigger`) from step `pc`: phase one walks those still at `pc`
    /// and persists what it decided under the job's mark; phase two enqueues what the
    /// records say comes next. `extra` events go to the trails of the messages walked.
    async fn run_messages(
        &self,
        trigger: u64,
        pc: u16,
        ids: &[MsgId],
        subs: &[String],
        digest: Option<&Digest>,
        extra: Vec<(MsgId, Event)>,
    ) -> Result<(), HandlerError> {
        let Some(t) = self.store.trigger(trigger).map_err(storage)? else {
            return Err(HandlerError::fatal(format!("trigger {trigger} is gone")));
        };
        let Some(first) = ids.first() else {
            return Ok(());
        };
        let mark = RunMark::Ran {
            trigger,
            pc,
            first: first.n,
            digest: digest.is_some(),
        };
        let reg = self.registry();
        let wf = reg.workflows.get(&t.workflow).cloned();
        if self.store.marked(mark).map_err(storage)? {
            // An earlier attempt wrote its records: enqueue what they call for (again; the
            // unique keys make repeats no-ops).
            let msgs = self.store.messages(ids).map_err(storage)?;
            let outs = self.next_jobs(&t, pc, &msgs, wf.as_deref())?;
            return self.enqueue(outs).await;
        }
        let now = now_ms();
        let mut events = extra;
        let mut stored = self.store.messages_by_id(ids).map_err(storage)?;
        let mut msgs = Vec::with_capacity(ids.len());
        let mut new = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            match stored.remove(id) {
                Some(m) => msgs.push(m),
                None => {
                    if let (0, Some(s)) = (pc, subs.get(k)) {
                        msgs.push(new_message(&t, *id, s, now));
                        new.push(*id);
                    }
                }
            }
        }
        let mut changed = Vec::new();
        // What every message of the job shares, converted once.
        let base = minijinja::context! {
            payload => minijinja::Value::from_serialize(&t.payload),
            digest => digest.map(|d| minijinja::context! {
                count => d.events.len(),
                events => minijinja::Value::from_serialize(&d.events),
            }),
            workflow => minijinja::context! {
                id => t.workflow.clone(),
                name => wf.as_ref().and_then(|w| w.def.name.clone()),
            },
            trigger => minijinja::context! { id => t.id.to_string() },
        };
        let is_fresh = |m: &Message| {
            m.pc == pc
                && matches!(
                    m.status,
                    Status::Queued | Status::Delayed | Status::Digesting
                )
        };
        // The subscribers (and their preferences) of the messages to walk, read at once.
        let who: Vec<&str> = msgs
            .iter()
            .filter(|m| is_fresh(m))
            .map(|m| m.subscriber.as_str())
            .collect();
        let subscribers = self.store.subscribers_by_id(&who).map_err(storage)?;
        let preferences = match &wf {
            Some(w) if !w.def.critical => self.store.preferences_by_id(&who).map_err(storage)?,
            _ => HashMap::new(),
        };
        let defaults = Arc::new(Preferences::default());
        drop(who);
        for (i, m) in msgs.iter_mut().enumerate() {
            if !is_fresh(m) {
                continue;
            }
            let Some(wf) = &wf else {
                skip_message(
                    m,
                    now,
                    format!("workflow {} no longer exists", t.workflow),
                    &mut events,
                );
                changed.push(i);
                continue;
            };
            let sub = subscribers.get(&m.subscriber);
            // Critical workflows were given none: they ignore preferences.
            let prefs = preferences.get(&m.subscriber).unwrap_or(&defaults);
            self.walk(&reg, wf, &t, m, sub, prefs, digest, &base, now, &mut events)?;
            changed.push(i);
        }
        if changed.is_empty() {
            let outs = self.next_jobs(&t, pc, &msgs, wf.as_deref())?;
            return self.enqueue(outs).await;
        }
        let mut trails: HashMap<MsgId, Vec<Event>> = HashMap::new();
        for (id, e) in events {
            trails.entry(id).or_default().push(e);
        }
        // What comes next if this attempt's records are the ones written (decided before
        // the records move into the commit; used only once it says they were).
        let outs = self.next_jobs(&t, pc, &msgs, wf.as_deref())?;
        let mut slots: Vec<Option<Message>> = msgs.into_iter().map(Some).collect();
        let written: Vec<Message> = changed
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .map(|mut m| {
                if let Some(mut evs) = trails.remove(&m.id) {
                    m.trail.append(&mut evs);
                }
                if m.run_ended() {
                    m.settle();
                }
                m
            })
            .collect();
        drop(slots);
        let outs = if self.commit_run(mark, written, new).await? {
            outs
        } else {
            let msgs = self.store.messages(ids).map_err(storage)?;
            self.next_jobs(&t, pc, &msgs, wf.as_deref())?
        };
        self.enqueue(outs).await
    }

    /// Walks one message from its `pc` until it waits (a delay, a digest) or ends.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        reg: &Registry,
        wf: &Workflow,
        t: &Trigger,
        m: &mut Message,
        sub: Option<&Arc<Subscriber>>,
        prefs: &Arc<Preferences>,
        digest: Option<&Digest>,
        base: &minijinja::Value,
        now: u64,
        events: &mut Vec<(MsgId, Event)>,
    ) -> Result<(), HandlerError> {
        let Some(sub) = sub else {
            let why = format!("no subscriber {}", m.subscriber);
            skip_message(m, now, why, events);
            self.store.count(now, &t.workflow, "", "", "skipped");
            return Ok(());
        };
        let ctx = minijinja::context! {
            subscriber => SubscriberValue::value(sub.clone()),
            preferences => Lazy::value(prefs.clone()),
            ..base.clone()
        };
        m.status = Status::Running;
        m.wait = None;
        m.updated_ms = now;
        let mut pc = m.pc as usize;
        let mut steps = 0;
        while pc < wf.ops.len() {
            steps += 1;
            if steps > 4 * wf.ops.len() + 8 {
                break;
            }
            let here = pc as u16;
            match &wf.ops[pc] {
                Op::Unless { cond, to } => match reg.renderer.holds(cond, &ctx) {
                    Ok(true) => pc += 1,
                    Ok(false) => {
                        events.push((
                            m.id,
                            Event::new(now, Some(here), "condition", format!("`{cond}` is false")),
                        ));
                        pc = *to as usize;
                    }
                    Err(e) => {
                        events.push((
                            m.id,
                            Event::new(
                                now,
                                Some(here),
                                "condition",
                                format!("`{cond}` failed ({e}); taken as false"),
                            ),
                        ));
                        pc = *to as usize;
                    }
                },
                Op::Jump(to) => pc = *to as usize,
                Op::Delay(ms) => {
                    m.pc = here + 1;
                    m.status = Status::Delayed;
                    m.wait = Some(Wait::Until(now.saturating_add(*ms)));
                    events.push((
                        m.id,
                        Event::new(now, Some(here), "delayed", format!("waiting {ms} ms")),
                    ));
                    return Ok(());
                }
                Op::Digest { window_ms, key } => {
                    if digest.is_some() && m.pc == here + 1 {
                        // This is the continuation of the window this step opened.
                        pc += 1;
                        continue;
                    }
                    let bucket = step_key(reg, wf, here, &sub.id, key.as_deref(), &ctx);
                    let joined = self.join_digest(&bucket, m.id, &t.payload, now, *window_ms)?;
                    m.pc = here + 1;
                    match joined {
                        Joined::Leader(closes) => {
                            m.status = Status::Digesting;
                            m.wait = Some(Wait::Digest {
                                key: bucket,
                                closes_ms: closes,
                            });
                            events.push((
                                m.id,
                                Event::new(
                                    now,
                                    Some(here),
                                    "digest.opened",
                                    format!("opened a digest window until {closes}"),
                                ),
                            ));
                        }
                        Joined::Member(leader, count) => {
                            m.status = Status::Digested;
                            events.push((
                                m.id,
                                Event::new(
                                    now,
                                    Some(here),
                                    "digest.joined",
                                    format!(
                                        "joined the digest of message {leader} ({count} events)"
                                    ),
                                ),
                            ));
                            self.store.count(now, &t.workflow, "", "", "digested");
                        }
                    }
                    return Ok(());
                }
                Op::Throttle {
                    limit,
                    window_ms,
                    key,
                } => {
                    let tk = step_key(reg, wf, here, &sub.id, key.as_deref(), &ctx);
                    let through = self
                        .store
                        .throttle(&tk, *limit, *window_ms, now)
                        .map_err(storage)?;
                    if !through {
                        m.pc = here + 1;
                        m.status = Status::Throttled;
                        events.push((
                            m.id,
                            Event::new(
                                now,
                                Some(here),
                                "throttled",
                                format!("over {limit} per {window_ms} ms"),
                            ),
                        ));
                        self.store.count(now, &t.workflow, "", "", "throttled");
                        return Ok(());
                    }
                    pc += 1;
                }
                Op::Send { channel, locales } => {
                    self.plan_send(
                        reg, wf, sub, prefs, m, here, *channel, locales, &ctx, now, events,
                    );
                    pc += 1;
                }
            }
        }
        m.pc = wf.ops.len() as u16;
        m.settle();
        Ok(())
    }

    /// Decides one send step for one message: preferences, addresses, rendering, the
    /// provider; adds the deliveries.
    #[allow(clippy::too_many_arguments)]
    fn plan_send(
        &self,
        reg: &Registry,
        wf: &Workflow,
        sub: &Subscriber,
        prefs: &Preferences,
        m: &mut Message,
        pc: u16,
        channel: Channel,
        locales: &[String],
        ctx: &minijinja::Value,
        now: u64,
        events: &mut Vec<(MsgId, Event)>,
    ) {
        let skip = |events: &mut Vec<(MsgId, Event)>, why: String| {
            events.push((m.id, Event::new(now, Some(pc), "skipped", why)));
            self.store
                .count(now, &wf.def.id, channel.as_str(), "", "skipped");
        };
        if let Err(o) = prefs.allows(&wf.def.id, channel) {
            return skip(events, o.reason(&wf.def.id, channel));
        }
        let addrs = sub.addresses(channel);
        if addrs.is_empty() {
            return skip(events, format!("the subscriber has no {channel} address"));
        }
        let locale = pick_locale(locales, sub.locale.as_deref(), &wf.def.locale);
        let step = format!("{}/{pc}/{locale}", wf.def.id);
        let mut rendered = Content::default();
        for (part, name) in reg.renderer.parts(&step) {
            match reg.renderer.render(name, ctx) {
                Ok(s) => match part {
                    Part::Subject => rendered.subject = Some(s),
                    Part::Title => rendered.title = Some(s),
                    Part::Body => rendered.body = s,
                    Part::Html => rendered.html = Some(s),
                },
                Err(e) => {
                    events.push((
                        m.id,
                        Event::new(
                            now,
                            Some(pc),
                            "failed",
                            format!("the {locale} template does not render: {e}"),
                        ),
                    ));
                    self.store
                        .count(now, &wf.def.id, channel.as_str(), "", "failed");
                    m.deliveries.push(Delivery {
                        pc,
                        idx: 0,
                        channel,
                        to: addrs[0].clone(),
                        status: DeliveryStatus::Failed,
                        provider: None,
                        attempts: 0,
                        provider_id: None,
                        route: 0,
                        content: Arc::default(),
                    });
                    return;
                }
            }
        }
        let Some(p) = self
            .providers
            .route(channel, &[], now)
            .or_else(|| self.providers.of(channel).next())
        else {
            events.push((
                m.id,
                Event::new(
                    now,
                    Some(pc),
                    "failed",
                    format!("no {channel} provider is configured"),
                ),
            ));
            self.store
                .count(now, &wf.def.id, channel.as_str(), "", "failed");
            return;
        };
        let content = Arc::new(rendered);
        for (idx, to) in addrs.into_iter().enumerate().take(u8::MAX as usize) {
            events.push((
                m.id,
                Event::new(
                    now,
                    Some(pc),
                    "queued",
                    format!("{channel} to {} via {} ({locale})", mask(&to), p.config.id),
                ),
            ));
            m.deliveries.push(Delivery {
                pc,
                idx: idx as u8,
                channel,
                to,
                status: DeliveryStatus::Queued,
                provider: Some(p.config.id.clone()),
                attempts: 0,
                provider_id: None,
                route: 0,
                content: content.clone(),
            });
        }
    }

    /// Adds a message to the digest window under `bucket`, opening one if none is open.
    fn join_digest(
        &self,
        bucket: &str,
        id: MsgId,
        event: &serde_json::Value,
        now: u64,
        window_ms: u64,
    ) -> Result<Joined, HandlerError> {
        let _g = self.store.lock(bucket.as_bytes());
        let d = self.store.digest(bucket).map_err(storage)?;
        match d {
            Some(mut d) if !d.closed => {
                if d.leader == id {
                    return Ok(Joined::Leader(d.closes_ms));
                }
                if !d.members.contains(&id) {
                    d.members.push(id);
                    d.events.push(event.clone());
                    self.store.put_digest(bucket, Some(&d)).map_err(storage)?;
                }
                Ok(Joined::Member(d.leader, d.events.len()))
            }
            _ => {
                let d = Digest {
                    leader: id,
                    closes_ms: now.saturating_add(window_ms),
                    events: vec![event.clone()],
                    members: vec![id],
                    closed: false,
                };
                self.store.put_digest(bucket, Some(&d)).map_err(storage)?;
                Ok(Joined::Leader(d.closes_ms))
            }
        }
    }

    /// Phase two of a run: the jobs its messages' records call for, with unique keys built
    /// from those records, so that a repeated run enqueues nothing new.
    fn next_jobs(
        &self,
        t: &Trigger,
        pc: u16,
        msgs: &[Message],
        wf: Option<&Workflow>,
    ) -> Result<Vec<Out>, HandlerError> {
        let mut outs = Vec::new();
        let Some(_wf) = wf else { return Ok(outs) };
        let prio = t.class.priority();
        // Sends: deliveries this run made (at steps from `pc` on, still on their first route).
        let mut by: BTreeMap<(String, u16), Vec<SendItem>> = BTreeMap::new();
        let mut delayed: BTreeMap<(u16, u64), Vec<u32>> = BTreeMap::new();
        for m in msgs {
            for d in &m.deliveries {
                if d.status == DeliveryStatus::Queued && d.route == 0 && d.pc >= pc {
                    if let Some(p) = &d.provider {
                        by.entry((p.clone(), d.pc)).or_default().push(SendItem {
                            m: m.id,
                            pc: d.pc,
                            idx: d.idx,
                            route: 0,
                        });
                    }
                }
            }
            match &m.wait {
                Some(Wait::Until(at)) if m.status == Status::Delayed => {
                    delayed.entry((m.pc, *at)).or_default().push(m.id.n);
                }
                Some(Wait::Digest { key, closes_ms }) if m.status == Status::Digesting => {
                    outs.push(Out {
                        queue: self.queue(DIGEST),
                        kind: "digest",
                        payload: raw(&DigestJob {
                            key: key.clone(),
                            leader: m.id,
                        })?,
                        key: format!("digest:{}", m.id),
                        priority: prio,
                        run_at: Some(*closes_ms),
                        max_attempts: None,
                        timeout_ms: None,
                    });
                }
                _ => {}
            }
        }
        for ((provider, spc), items) in by {
            let Some(p) = self.providers.get(&provider) else {
                continue;
            };
            for chunk in items.chunks(self.send_chunk(p)) {
                outs.push(self.send_out(
                    p,
                    Vec::new(),
                    chunk.to_vec(),
                    format!(
                        "send:{}:{spc}:{provider}:{}:{}",
                        t.id, chunk[0].m.n, chunk[0].idx
                    ),
                    prio,
                    None,
                )?);
            }
        }
        for ((npc, at), ns) in delayed {
            for chunk in ns.chunks(self.settings.run_batch.max(1)) {
                outs.push(Out {
                    queue: self.run_queue(t.class),
                    kind: "run",
                    payload: raw(&RunJob {
                        trigger: t.id,
                        pc: npc,
                        ns: chunk.to_vec(),
                        subs: Vec::new(),
                    })?,
                    key: format!("run:{}:{npc}:{}", t.id, chunk[0]),
                    priority: prio,
                    run_at: Some(at),
                    max_attempts: None,
                    timeout_ms: None,
                });
            }
        }
        Ok(outs)
    }

    fn send_chunk(&self, p: &Provider) -> usize {
        if p.config.rate_limit.is_some() {
            p.config.batch()
        } else {
            self.settings.send_batch.max(1)
        }
    }

    fn send_out(
        &self,
        p: &Provider,
        tried: Vec<String>,
        items: Vec<SendItem>,
        key: String,
        priority: i32,
        run_at: Option<u64>,
    ) -> Result<Out, HandlerError> {
        // The lease covers every call the job makes one after another at the worst.
        let calls = items.len().div_ceil(p.config.batch()).div_ceil(16).max(1) as u64;
        let timeout = p
            .config
            .timeout
            .0
            .saturating_mul(calls)
            .saturating_add(30_000);
        Ok(Out {
            queue: self.send_queue(&p.config),
            kind: "send",
            payload: raw(&SendJob {
                provider: p.config.id.clone(),
                tried,
                items,
            })?,
            key,
            priority,
            run_at,
            max_attempts: Some(self.settings.send_attempts),
            timeout_ms: Some(timeout),
        })
    }

    // --- digests -----------------------------------------------------------------------

    /// Closes a digest window and runs its leader on with every event that joined.
    pub async fn digest(&self, ctx: JobContext) -> HandlerResult {
        let job: DigestJob = ctx.payload()?;
        let done_key = format!("done\0{}", job.leader);
        let d = {
            let _g = self.store.lock(job.key.as_bytes());
            match self.store.digest(&job.key).map_err(storage)? {
                Some(mut d) if d.leader == job.leader && !d.closed => {
                    d.closed = true;
                    // Move it aside: the next event of this key opens a new window at once.
                    self.store
                        .put_digest(&done_key, Some(&d))
                        .map_err(storage)?;
                    self.store.put_digest(&job.key, None).map_err(storage)?;
                    self.store.persist().map_err(storage)?;
                    Some(d)
                }
                _ => self.store.digest(&done_key).map_err(storage)?,
            }
        };
        let Some(d) = d else {
            // Already closed and run on by an earlier attempt.
            return Ok(None);
        };
        let Some(m) = self.store.message(job.leader).map_err(storage)? else {
            return Ok(None);
        };
        let closed = Event::new(
            now_ms(),
            Some(m.pc.saturating_sub(1)),
            "digest.closed",
            format!("{} events in the digest", d.events.len()),
        );
        self.run_messages(
            job.leader.trigger,
            m.pc,
            &[m.id],
            &[],
            Some(&d),
            vec![(m.id, closed)],
        )
        .await?;
        self.store.put_digest(&done_key, None).map_err(storage)?;
        Ok(None)
    }

    // --- sends -------------------------------------------------------------------------

    /// A send job.
    pub async fn send(&self, ctx: JobContext) -> HandlerResult {
        let job: SendJob = ctx.payload()?;
        let Some(p) = self.providers.get(&job.provider).cloned() else {
            return Err(HandlerError::fatal(format!("no provider {}", job.provider)));
        };
        let ids: Vec<MsgId> = job.items.iter().map(|i| i.m).collect();
        let msgs = self.store.deliveries_by_id(&ids).map_err(storage)?;
        let now = now_ms();
        let last_attempt = ctx.attempt >= self.settings.send_attempts;
        let mut live: Vec<SendItem> = Vec::new();
        // Deliveries an earlier attempt of this job moved on: re-enqueue their moves.
        let mut moved: BTreeMap<(String, u32), Vec<SendItem>> = BTreeMap::new();
        for it in &job.items {
            let Some(d) = msgs.get(&it.m).and_then(|m| find(m, it)) else {
                continue;
            };
            if d.route == it.route {
                if matches!(d.status, DeliveryStatus::Queued | DeliveryStatus::Dead) {
                    live.push(*it);
                }
            } else if d.route == it.route + 1 && d.status == DeliveryStatus::Queued {
                if let Some(to) = &d.provider {
                    moved
                        .entry((to.clone(), d.route))
                        .or_default()
                        .push(SendItem {
                            route: d.route,
                            ..*it
                        });
                }
            }
        }
        let mut events: Vec<(SendItem, Event)> = Vec::new();
        let mut outcome = Outcomes::default();
        let channel = p.config.channel();
        if !live.is_empty() {
            if !p.breaker.acquire(now) {
                outcome.failover = live.clone();
                for it in &live {
                    events.push((
                        *it,
                        Event::new(
                            now,
                            Some(it.pc),
                            "breaker",
                            format!("{}'s circuit breaker is open", p.config.id),
                        ),
                    ));
                }
            } else {
                self.call(&p, &live, &msgs, now, &mut events, &mut outcome)
                    .await;
            }
        }
        // What the calls decided, per delivery: its new state, where it moves, what counts.
        let mut retry_items = Vec::new();
        let mut moves: HashMap<SendItem, (String, u32)> = HashMap::new();
        // What each delivery counts as in the aggregates (all under this job's provider).
        let mut counts: HashMap<SendItem, &'static str> = HashMap::new();
        // The new states, started from what was read (the messages themselves are shared
        // with the store's memory and stay as they are).
        let mut states: HashMap<SendItem, DeliveryState> = HashMap::with_capacity(live.len());
        let mut tried = job.tried.clone();
        tried.push(p.config.id.clone());
        let next = self.providers.route(channel, &tried, now).cloned();
        for it in &outcome.failover {
            let Some(d) = state_entry(&mut states, &msgs, it) else {
                continue;
            };
            match &next {
                Some(q) => {
                    d.route += 1;
                    d.provider = Some(q.config.id.clone());
                    events.push((
                        *it,
                        Event::new(
                            now,
                            Some(it.pc),
                            "failover",
                            format!("failing over from {} to {}", p.config.id, q.config.id),
                        ),
                    ));
                    moves.insert(*it, (q.config.id.clone(), d.route));
                }
                None if last_attempt => {
                    // Final: the delivery waits in the dead-letter queue (the store's dead
                    // index) for `redrive`; the job itself ends.
                    d.status = DeliveryStatus::Dead;
                    events.push((*it, Event::new(now, Some(it.pc), "dead", format!("no provider took it after {} attempts; in the dead-letter queue (weir-notify redrive)", ctx.attempt))));
                    counts.insert(*it, "dead");
                }
                None => {
                    events.push((*it, Event::new(now, Some(it.pc), "retrying", format!("no other {channel} provider is available; retrying with backoff (attempt {} of {})", ctx.attempt, self.settings.send_attempts))));
                    retry_items.push(*it);
                }
            }
        }
        let mut deferred_ms = 0u64;
        for (it, ms) in &outcome.deferred {
            let Some(d) = state_entry(&mut states, &msgs, it) else {
                continue;
            };
            d.route += 1;
            deferred_ms = deferred_ms.max(*ms);
            events.push((
                *it,
                Event::new(
                    now,
                    Some(it.pc),
                    "deferred",
                    format!("{} asked to wait {ms} ms (429); retrying then", p.config.id),
                ),
            ));
            moves.insert(*it, (p.config.id.clone(), d.route));
        }
        for (it, result) in &outcome.done {
            let Some(d) = state_entry(&mut states, &msgs, it) else {
                continue;
            };
            d.provider = Some(p.config.id.clone());
            match result {
                Ok(pid) => {
                    d.status = DeliveryStatus::Sent;
                    d.provider_id = pid.clone();
                    counts.insert(*it, "sent");
                }
                Err(_) => {
                    d.status = DeliveryStatus::Failed;
                    counts.insert(*it, "failed");
                }
            }
        }
        let mut per_item: HashMap<SendItem, Vec<Event>> = HashMap::new();
        for (it, e) in events {
            per_item.entry(it).or_default().push(e);
        }
        let mut updates = Vec::with_capacity(live.len());
        let mut updated = Vec::with_capacity(live.len());
        for it in &live {
            if state_entry(&mut states, &msgs, it).is_none() {
                continue;
            }
            let Some(mut state) = states.remove(it) else {
                continue;
            };
            state.attempts += 1;
            state.events = per_item.remove(it).unwrap_or_default();
            updates.push(StateUpdate {
                id: it.m,
                pc: it.pc,
                idx: it.idx,
                route: it.route,
                state,
            });
            updated.push(*it);
        }
        let class = msgs.values().next().map(|m| m.class).unwrap_or(Class::Bulk);
        let written = self.commit_states(updates).await?;
        // Only what this attempt wrote has consequences: a delivery another attempt moved
        // on meanwhile is that attempt's to follow.
        let mut stale = HashSet::new();
        let mut tally: HashMap<(&str, &'static str), u64> = HashMap::new();
        for (it, ok) in updated.iter().zip(&written) {
            if !ok {
                stale.insert(*it);
                continue;
            }
            if let Some(outcome) = counts.get(it) {
                let wf = msgs.get(&it.m).map(|m| m.workflow.as_str()).unwrap_or("");
                *tally.entry((wf, outcome)).or_default() += 1;
            }
            if let Some((to, route)) = moves.remove(it) {
                moved
                    .entry((to, route))
                    .or_default()
                    .push(SendItem { route, ..*it });
            }
        }
        for ((wf, outcome), n) in tally {
            self.store
                .count_n(now, wf, channel.as_str(), &p.config.id, outcome, n);
        }
        retry_items.retain(|it| !stale.contains(it));
        let mut outs = Vec::new();
        for ((to, route), items) in moved {
            let Some(q) = self.providers.get(&to) else {
                continue;
            };
            let run_at = (to == p.config.id).then(|| now.saturating_add(deferred_ms));
            let mut tried = job.tried.clone();
            if to != p.config.id {
                tried.push(p.config.id.clone());
            }
            for (k, chunk) in items.chunks(self.send_chunk(q)).enumerate() {
                outs.push(self.send_out(
                    q,
                    tried.clone(),
                    chunk.to_vec(),
                    format!("mv:{}:{to}:{route}:{k}", ctx.id),
                    class.priority(),
                    run_at,
                )?);
            }
        }
        self.enqueue(outs).await?;
        if !retry_items.is_empty() {
            let why = format!("{} deliveries found no provider", retry_items.len());
            return Err(HandlerError::retry(why));
        }
        Ok(None)
    }

    /// Sends dead deliveries again (of one provider's, or all): each gets a new route to the
    /// first provider of its channel that takes sends now, a fresh set of attempts and a
    /// `redriven` event. Returns how many.
    pub async fn redrive(&self, provider: Option<&str>) -> Result<u64, HandlerError> {
        let mut total = 0u64;
        let mut after = None;
        loop {
            let page = self.store.dead(after, 1_000).map_err(storage)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            let ids: Vec<MsgId> = page.iter().map(|(m, _, _)| *m).collect();
            let msgs = self.store.messages_by_id(&ids).map_err(storage)?;
            let now = now_ms();
            let mut updates = Vec::new();
            let mut targets = Vec::new();
            for (id, pc, idx) in page {
                let it = SendItem {
                    m: id,
                    pc,
                    idx,
                    route: 0,
                };
                let Some(m) = msgs.get(&id) else { continue };
                let Some(d) = find(m, &it) else { continue };
                if d.status != DeliveryStatus::Dead
                    || provider.is_some_and(|p| d.provider.as_deref() != Some(p))
                {
                    continue;
                }
                let Some(to) = self
                    .providers
                    .route(d.channel, &[], now)
                    .or_else(|| self.providers.of(d.channel).next())
                else {
                    continue;
                };
                let mut state = DeliveryState::of(d);
                state.status = DeliveryStatus::Queued;
                state.route = d.route + 1;
                state.provider = Some(to.config.id.clone());
                state.events = vec![Event::new(
                    now,
                    Some(pc),
                    "redriven",
                    format!("out of the dead-letter queue, to {}", to.config.id),
                )];
                updates.push(StateUpdate {
                    id,
                    pc,
                    idx,
                    route: d.route,
                    state,
                });
                targets.push((
                    to.config.id.clone(),
                    m.class,
                    SendItem {
                        route: d.route + 1,
                        ..it
                    },
                ));
            }
            let written = self.commit_states(updates).await?;
            let mut by: BTreeMap<(String, i32), Vec<SendItem>> = BTreeMap::new();
            for ((to, class, it), ok) in targets.into_iter().zip(written) {
                if ok {
                    by.entry((to, class.priority())).or_default().push(it);
                    total += 1;
                }
            }
            let mut outs = Vec::new();
            for ((to, priority), items) in by {
                let Some(q) = self.providers.get(&to) else {
                    continue;
                };
                for chunk in items.chunks(self.send_chunk(q)) {
                    let first = chunk[0];
                    outs.push(self.send_out(
                        q,
                        Vec::new(),
                        chunk.to_vec(),
                        format!(
                            "redrive:{}/{}/{}:{}",
                            first.m, first.pc, first.idx, first.route
                        ),
                        priority,
                        None,
                    )?);
                }
            }
            self.enqueue(outs).await?;
        }
        Ok(total)
    }

    /// Calls the provider for `live` in batches (several calls at once), recording each
    /// delivery's outcome.
    async fn call(
        &self,
        p: &Arc<Provider>,
        live: &[SendItem],
        msgs: &HashMap<MsgId, Arc<Message>>,
        now: u64,
        events: &mut Vec<(SendItem, Event)>,
        out: &mut Outcomes,
    ) {
        let mut items: Vec<SendItem> = Vec::with_capacity(live.len());
        let mut outgoing: Vec<Outgoing> = Vec::with_capacity(live.len());
        for it in live {
            let Some(d) = msgs.get(&it.m).and_then(|m| find(m, it)) else {
                continue;
            };
            items.push(*it);
            outgoing.push(Outgoing {
                key: format!("{}/{}/{}", it.m, it.pc, it.idx),
                to: d.to.clone(),
                content: d.content.clone(),
            });
        }
        let groups: Vec<std::ops::Range<usize>> = if p.config.kind == Kind::Fcm {
            let mut at = 0;
            fcm_groups(&outgoing, p.config.batch())
                .into_iter()
                .map(|g| {
                    let r = at..at + g.len();
                    at += g.len();
                    r
                })
                .collect()
        } else {
            (0..outgoing.len())
                .step_by(p.config.batch())
                .map(|s| s..(s + p.config.batch()).min(outgoing.len()))
                .collect()
        };
        let parallel = (p.config.concurrency as usize).clamp(1, 16);
        let outgoing = &outgoing;
        let calls = futures::stream::iter(groups.into_iter().map(|r| {
            let p = p.clone();
            async move { (r.clone(), p.send(&outgoing[r]).await) }
        }))
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await;
        for (range, call) in calls {
            let chunk = &items[range];
            // One call's answer, shared by the events of every delivery it carried.
            let response: Arc<str> = Arc::from(call.response.as_str());
            let mut ev = |it: &SendItem, kind: &'static str, detail: String| {
                events.push((
                    *it,
                    Event {
                        at_ms: now,
                        pc: Some(it.pc),
                        kind: kind.into(),
                        detail,
                        provider: Some(p.config.id.clone()),
                        status: call.status,
                        response: Some(response.clone()),
                        elapsed_ms: Some(call.elapsed_ms),
                    },
                ))
            };
            match &call.result {
                CallResult::Accepted(results) => {
                    p.breaker.success();
                    for (k, it) in chunk.iter().enumerate() {
                        match results
                            .get(k)
                            .cloned()
                            .unwrap_or(ItemResult::Accepted(None))
                        {
                            ItemResult::Accepted(pid) => {
                                ev(it, "sent", format!("accepted by {}", p.config.id));
                                out.done.push((*it, Ok(pid)));
                            }
                            ItemResult::Rejected(why) => {
                                ev(it, "failed", format!("{} refused it: {why}", p.config.id));
                                out.done.push((*it, Err(why)));
                            }
                        }
                    }
                }
                CallResult::Rejected => {
                    p.breaker.success();
                    for it in chunk {
                        ev(it, "failed", format!("{} refused the call", p.config.id));
                        out.done.push((*it, Err("refused".into())));
                    }
                }
                CallResult::Transient => {
                    p.breaker.failure(now);
                    for it in chunk {
                        ev(it, "attempt", format!("{} failed", p.config.id));
                        out.failover.push(*it);
                    }
                }
                CallResult::RateLimited(ms) => {
                    for it in chunk {
                        ev(it, "rate_limited", format!("{} answered 429", p.config.id));
                        let d = msgs.get(&it.m).and_then(|m| find(m, it));
                        let deferrals = d.map(|d| d.route).unwrap_or(0);
                        if deferrals >= self.settings.max_deferrals {
                            out.failover.push(*it);
                        } else {
                            out.deferred.push((*it, *ms));
                        }
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Outcomes {
    done: Vec<(SendItem, Result<Option<String>, String>)>,
    failover: Vec<SendItem>,
    deferred: Vec<(SendItem, u64)>,
}

enum Joined {
    Leader(u64),
    Member(MsgId, usize),
}

/// The key of a digest window or throttle counter: the step, the subscriber and the step's
/// key template rendered for this run (empty without one).
fn step_key(
    reg: &Registry,
    wf: &Workflow,
    pc: u16,
    subscriber: &str,
    key: Option<&str>,
    ctx: &minijinja::Value,
) -> String {
    let k = key
        .map(|name| reg.renderer.render(name, ctx).unwrap_or_default())
        .unwrap_or_default();
    format!("{}\0{pc}\0{subscriber}\0{k}", wf.def.id)
}

/// Ends a message's run before any step: nothing will be sent, and the trail says why.
fn skip_message(m: &mut Message, now: u64, why: String, events: &mut Vec<(MsgId, Event)>) {
    m.status = Status::Skipped;
    m.updated_ms = now;
    events.push((m.id, Event::new(now, None, "skipped", why)));
}

fn new_message(t: &Trigger, id: MsgId, subscriber: &str, now: u64) -> Message {
    Message {
        id,
        workflow: t.workflow.clone(),
        subscriber: subscriber.to_string(),
        class: t.class,
        status: Status::Queued,
        created_ms: now,
        updated_ms: now,
        pc: 0,
        wait: None,
        deliveries: Vec::new(),
        // Its `triggered` event is made from the record when the trail is read.
        trail: Vec::new(),
    }
}

fn find<'a>(m: &'a Message, it: &SendItem) -> Option<&'a Delivery> {
    m.deliveries
        .iter()
        .find(|d| d.pc == it.pc && d.idx == it.idx)
}

/// The new state a send job is making for `it`: started, on first use, from the delivery as
/// read.
fn state_entry<'a>(
    states: &'a mut HashMap<SendItem, DeliveryState>,
    msgs: &HashMap<MsgId, Arc<Message>>,
    it: &SendItem,
) -> Option<&'a mut DeliveryState> {
    use std::collections::hash_map::Entry;
    match states.entry(*it) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => {
            let d = msgs.get(&it.m).and_then(|m| find(m, it))?;
            Some(e.insert(DeliveryState::of(d)))
        }
    }
}

/// An address as the activity trail shows it: enough to recognise, not to harvest
/// (`a***@example.com`, `+1555***67`).
pub fn mask(addr: &str) -> String {
    if let Some((user, domain)) = addr.split_once('@') {
        let first: String = user.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = addr.chars().collect();
    if chars.len() <= 6 {
        return "***".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}***{tail}")
}

/// Registers the pipeline's handlers on two worker pools: one for fan-out, runs and digests
/// (CPU work: rendering, records), one for the provider queues (waiting on providers).
pub fn workers(
    n: Arc<Notify>,
    run_concurrency: usize,
    send_concurrency: usize,
) -> Vec<weir_client::Worker> {
    let a = n.clone();
    let b = n.clone();
    let c = n.clone();
    let e = n.clone();
    // Transactional runs: their own pool (they also go to the main one when it is free).
    let (run_tx, fanout, run, digest) = (
        n.queue(RUN_TX),
        n.queue(FANOUT),
        n.queue(RUN),
        n.queue(DIGEST),
    );
    let tx = weir_client::WorkerBuilder::new(n.weir.clone(), &[run_tx.as_str()])
        .name("weir-notify transactional")
        .concurrency(weir_client::Concurrency::Fixed(2))
        .batch(2)
        .handle("run", move |ctx| {
            let n = e.clone();
            async move { n.run(ctx).await }
        })
        .build();
    let pipeline = weir_client::WorkerBuilder::new(
        n.weir.clone(),
        &[
            run_tx.as_str(),
            fanout.as_str(),
            run.as_str(),
            digest.as_str(),
        ],
    )
    .name("weir-notify pipeline")
    .concurrency(weir_client::Concurrency::Fixed(run_concurrency))
    .batch(run_concurrency.max(1))
    .handle("fanout", move |ctx| {
        let n = a.clone();
        async move { n.fanout(ctx).await }
    })
    .handle("run", move |ctx| {
        let n = b.clone();
        async move { n.run(ctx).await }
    })
    .handle("digest", move |ctx| {
        let n = c.clone();
        async move { n.digest(ctx).await }
    })
    .build();
    let queues: Vec<String> = n
        .providers
        .all()
        .iter()
        .map(|p| n.send_queue(&p.config))
        .collect();
    let mut out = vec![tx, pipeline];
    if !queues.is_empty() {
        let refs: Vec<&str> = queues.iter().map(String::as_str).collect();
        let d = n.clone();
        out.push(
            weir_client::WorkerBuilder::new(n.weir.clone(), &refs)
                .name("weir-notify sends")
                .concurrency(weir_client::Concurrency::Fixed(send_concurrency))
                .batch(send_concurrency.clamp(1, 64))
                .handle("send", move |ctx| {
                    let n = d.clone();
                    async move { n.send(ctx).await }
                })
                .build(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn addresses_are_masked_in_the_activity_trail() {
        assert_eq!(mask("alice@example.com"), "a***@example.com");
        assert_eq!(mask("+15551234567"), "+155***67");
        assert_eq!(mask("abc"), "***");
    }
}
