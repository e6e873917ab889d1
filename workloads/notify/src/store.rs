//! What weir-notify keeps on disk, in an fjall database of its own beside the embedded Weir:
//! subscribers, topics and their members, preferences, workflows defined through the API,
//! triggers and their idempotency keys, messages with their activity trails, digest windows,
//! throttle counters and daily aggregates.
//!
//! Jobs live in Weir; this store holds the product's records. Writes that acknowledge
//! something to a client (a trigger accepted, a subscriber saved) are persisted with fsync
//! before the reply; writes made inside a job are persisted before the job is acked, so a
//! crash replays the job rather than losing its records.
//!
//! Keys are chosen for the scans the API makes: a message's key is its trigger id then its
//! number (big-endian), so messages list newest trigger first by a reverse scan and a
//! trigger's messages are one prefix; activity events sort under their message by time.

use crate::model::{Channel, Preferences, Subscriber, Topic};
use crate::workflow::{Class, WorkflowDef};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A storage failure (the disk, or a record that does not decode).
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(format!("a record does not decode: {e}"))
    }
}

/// Results of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A message's id: the trigger that made it and its number within that trigger. Written
/// `TRIGGER-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    /// The trigger.
    pub trigger: u64,
    /// Its number in the trigger's fan-out, from 0.
    pub n: u32,
}

impl MsgId {
    /// The 12-byte key.
    pub fn key(self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&self.trigger.to_be_bytes());
        k[8..].copy_from_slice(&self.n.to_be_bytes());
        k
    }

    fn from_key(k: &[u8]) -> Option<MsgId> {
        let t = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
        let n = u32::from_be_bytes(k.get(8..12)?.try_into().ok()?);
        Some(MsgId { trigger: t, n })
    }

    /// Parses `TRIGGER-N`.
    pub fn parse(s: &str) -> Option<MsgId> {
        let (t, n) = s.split_once('-')?;
        Some(MsgId {
            trigger: t.parse().ok()?,
            n: n.parse().ok()?,
        })
    }
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.trigger, self.n)
    }
}

impl Serialize for MsgId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MsgId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MsgId::parse(&s).ok_or_else(|| serde::de::Error::custom("a message id TRIGGER-N"))
    }
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Made by a trigger; its run has not started.
    Queued,
    /// Its run is going through the workflow's steps.
    Running,
    /// Waiting out a delay step.
    Delayed,
    /// Leads a digest window, waiting for it to close.
    Digesting,
    /// Merged into another message's digest; ends here.
    Digested,
    /// Stopped by a throttle step.
    Throttled,
    /// Every send step was skipped (opted out, no address, a false condition).
    Skipped,
    /// Its sends are with the providers' queues.
    Sending,
    /// Every send accepted by a provider (some may have been skipped).
    Sent,
    /// A send was refused for good (a 4xx from the provider: a bad address, say).
    Failed,
    /// A send ran out of attempts; it waits in the dead-letter queue for `redrive`.
    Dead,
}

impl Status {
    /// Its name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Delayed => "delayed",
            Status::Digesting => "digesting",
            Status::Digested => "digested",
            Status::Throttled => "throttled",
            Status::Skipped => "skipped",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Dead => "dead",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Status> {
        use Status::*;
        [
            Queued, Running, Delayed, Digesting, Digested, Throttled, Skipped, Sending, Sent,
            Failed, Dead,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// Where one delivery (a send step to one address) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// In a provider's queue.
    Queued,
    /// A provider accepted it.
    Sent,
    /// Refused for good.
    Failed,
    /// Out of attempts (dead-letter queue).
    Dead,
}

/// One delivery of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The send step's position in the workflow's program.
    pub pc: u16,
    /// Its channel.
    pub channel: Channel,
    /// The address it goes to.
    pub to: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// The provider that accepted it, or last tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Provider calls made for it.
    pub attempts: u32,
    /// The provider's id for it, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Its address's index among the subscriber's addresses on the channel.
    #[serde(default)]
    pub idx: u8,
    /// How many times it moved to another send job (a failover, a 429's deferral); a send
    /// job's item with another route number is stale.
    #[serde(default)]
    pub route: u32,
    /// What it says.
    pub content: Content,
}

/// Rendered content of a delivery, kept with it (what was sent is part of the activity).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// Email subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Push title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text.
    pub body: String,
    /// Email HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// What a message waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// A delay step's end, ms since the epoch.
    Until(u64),
    /// A digest window it leads.
    Digest {
        /// The window's key.
        key: String,
        /// When it closes.
        closes_ms: u64,
    },
}

/// One message: one workflow run for one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub id: MsgId,
    /// The workflow.
    pub workflow: String,
    /// The subscriber.
    pub subscriber: String,
    /// Transactional or bulk.
    pub class: Class,
    /// Where it stands.
    pub status: Status,
    /// When the trigger made it, ms since the epoch.
    pub created_ms: u64,
    /// Its last change.
    pub updated_ms: u64,
    /// The next step of its run.
    pub pc: u16,
    /// What it waits for, while delayed or leading a digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// Its deliveries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<Delivery>,
    /// A hash of the stored bytes it was read from (0: not read from the store): a job
    /// whose copy is still what is stored writes it as it is, without merging.
    #[serde(skip)]
    pub read_hash: u64,
}

/// A stored message as [`Store::update`] shows it to its merge function.
pub struct Fresh<'a> {
    bytes: Option<&'a [u8]>,
    /// The hash of its bytes (0 when there is none).
    pub hash: u64,
}

impl Fresh<'_> {
    /// Whether a message is stored.
    pub fn exists(&self) -> bool {
        self.bytes.is_some()
    }

    /// Decodes it.
    pub fn decode(&self) -> Result<Option<Message>> {
        match self.bytes {
            None => Ok(None),
            Some(b) => {
                let mut m: Message = serde_json::from_slice(b)?;
                m.read_hash = self.hash;
                Ok(Some(m))
            }
        }
    }
}

/// FNV-1a: a hash that is the same in every build and version, for what is stored (an
/// idempotency key's request fingerprint) or sent (a call's idempotency key).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hash(bytes: &[u8]) -> u64 {
    // The length mixed in, and never 0 (which stands for "no record").
    (fnv1a(bytes.iter().copied()) ^ bytes.len() as u64) | 1
}

impl Message {
    /// Whether its run has ended (what is left is its deliveries).
    pub fn run_ended(&self) -> bool {
        matches!(
            self.status,
            Status::Skipped | Status::Sending | Status::Sent | Status::Failed | Status::Dead
        )
    }

    /// The status its deliveries add up to once its run has ended.
    pub fn settle(&mut self) {
        if matches!(self.status, Status::Digested | Status::Throttled) {
            return;
        }
        let d = &self.deliveries;
        self.status = if d.is_empty() {
            Status::Skipped
        } else if d.iter().any(|x| x.status == DeliveryStatus::Queued) {
            Status::Sending
        } else if d.iter().any(|x| x.status == DeliveryStatus::Dead) {
            Status::Dead
        } else if d.iter().all(|x| x.status == DeliveryStatus::Sent) {
            Status::Sent
        } else {
            Status::Failed
        };
    }
}

/// One entry of a message's activity trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The step's position, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<u16>,
    /// What happened: `triggered`, `step`, `skipped`, `delayed`, `digest.joined`,
    /// `digest.closed`, `throttled`, `queued`, `attempt`, `sent`, `failover`, `deferred`,
    /// `failed`, `dead`, `redriven`.
    pub kind: String,
    /// In words.
    pub detail: String,
    /// The provider, for provider events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's HTTP status (SMTP: its reply code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the provider's answer (at most 512 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// How long the provider call took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

impl Event {
    /// A plain event.
    pub fn new(at_ms: u64, pc: Option<u16>, kind: &str, detail: impl Into<String>) -> Event {
        Event {
            at_ms,
            pc,
            kind: kind.to_string(),
            detail: detail.into(),
            provider: None,
            status: None,
            response: None,
            elapsed_ms: None,
        }
    }
}

/// Who a trigger is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Recipients {
    /// One subscriber id.
    One(String),
    /// Several.
    Many(Vec<String>),
    /// Every subscriber of a topic.
    Topic {
        /// The topic's key.
        topic: String,
    },
}

/// A trigger as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Its id (time-ordered).
    pub id: u64,
    /// The workflow.
    pub workflow: String,
    /// Who it is for.
    pub to: Recipients,
    /// The event's data.
    pub payload: serde_json::Value,
    /// Transactional or bulk.
    pub class: Class,
    /// When it was accepted.
    pub created_ms: u64,
    /// Messages made so far.
    pub messages: u32,
    /// Whether every message has been made (a topic's fan-out runs as jobs).
    pub fanned_out: bool,
    /// The idempotency key it came with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// An idempotency key's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The trigger it made.
    pub trigger: u64,
    /// A hash of the request body (a repeat with another body is refused).
    pub fingerprint: u64,
    /// When the first request came.
    pub at_ms: u64,
    /// The reply once the first request finished (`None` while it is in flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// An open or closed digest window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// The message that opened it; its run goes on when the window closes.
    pub leader: MsgId,
    /// When it closes.
    pub closes_ms: u64,
    /// The events that joined, oldest first (the leader's first).
    pub events: Vec<serde_json::Value>,
    /// The messages that joined (the leader's first).
    pub members: Vec<MsgId>,
    /// Set once the window closed: later events open a new one.
    pub closed: bool,
}

/// One day's count for a (workflow, channel, provider, outcome).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatKey {
    /// Days since the Unix epoch (UTC).
    pub day: u32,
    /// The workflow.
    pub workflow: String,
    /// The channel.
    pub channel: String,
    /// The provider (empty when none was involved).
    pub provider: String,
    /// `sent`, `failed`, `dead`, `skipped`, `throttled`, `digested`.
    pub outcome: String,
}

impl StatKey {
    fn key(&self) -> Vec<u8> {
        let mut k = self.day.to_be_bytes().to_vec();
        for part in [&self.workflow, &self.channel, &self.provider, &self.outcome] {
            k.extend_from_slice(part.as_bytes());
            k.push(0);
        }
        k
    }

    fn from_key(k: &[u8]) -> Option<StatKey> {
        let day = u32::from_be_bytes(k.get(..4)?.try_into().ok()?);
        let mut parts = k.get(4..)?.split(|&b| b == 0);
        let mut next = || {
            parts
                .next()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        Some(StatKey {
            day,
            workflow: next()?,
            channel: next()?,
            provider: next()?,
            outcome: next()?,
        })
    }
}

struct Keyspaces {
    subscribers: Keyspace,
    prefs: Keyspace,
    topics: Keyspace,
    members: Keyspace,
    member_of: Keyspace,
    workflows: Keyspace,
    triggers: Keyspace,
    idem: Keyspace,
    messages: Keyspace,
    by_subscriber: Keyspace,
    activity: Keyspace,
    digests: Keyspace,
    throttles: Keyspace,
    stats: Keyspace,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    ks: Arc<Keyspaces>,
    last_trigger: Arc<AtomicU64>,
    write_lock: Arc<parking_lot::Mutex<()>>,
    event_seq: Arc<std::sync::atomic::AtomicU32>,
    stats: Arc<parking_lot::Mutex<HashMap<StatKey, u64>>>,
    locks: Arc<Vec<parking_lot::Mutex<()>>>,
}

fn two(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own records cannot fail: every map key is a string.
    serde_json::to_vec(v).unwrap_or_default()
}

fn get<T: for<'de> Deserialize<'de>>(ks: &Keyspace, key: &[u8]) -> Result<Option<T>> {
    match ks.get(key)? {
        None => Ok(None),
        Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
    }
}

/// A page of results and the cursor to the next one.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Filters for the activity feed.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this subscriber.
    pub subscriber: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this trigger.
    pub trigger: Option<u64>,
    /// Only messages with a delivery on this channel.
    pub channel: Option<Channel>,
}

/// Messages examined per activity page at most (filters have no index of their own, except
/// `subscriber` and `trigger`): a filtered page may come back short, with a cursor to go on.
pub const SCAN_LIMIT: usize = 10_000;

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError(e.to_string()))?;
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .cache_size(64 << 20)
            .open()?;
        let open = |name: &str| {
            // The message and activity keyspaces take the write load: bigger memtables mean
            // fewer, larger flushes and less compaction.
            let memtable = match name {
                "messages" | "activity" => 64 << 20,
                _ => 16 << 20,
            };
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let ks = Keyspaces {
            subscribers: open("subscribers")?,
            prefs: open("preferences")?,
            topics: open("topics")?,
            members: open("topic_members")?,
            member_of: open("member_of")?,
            workflows: open("workflows")?,
            triggers: open("triggers")?,
            idem: open("idempotency")?,
            messages: open("messages")?,
            by_subscriber: open("messages_by_subscriber")?,
            activity: open("activity")?,
            digests: open("digests")?,
            throttles: open("throttles")?,
            stats: open("stats")?,
        };
        let last = match ks.triggers.last_key_value() {
            Some(g) => {
                let k = g.key()?;
                u64::from_be_bytes(k.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
            }
            None => 0,
        };
        Ok(Store {
            db,
            ks: Arc::new(ks),
            last_trigger: Arc::new(AtomicU64::new(last)),
            write_lock: Arc::new(parking_lot::Mutex::new(())),
            event_seq: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            stats: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            locks: Arc::new((0..256).map(|_| parking_lot::Mutex::new(())).collect()),
        })
    }

    /// Makes every write so far durable (fsync of the journal).
    pub fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// A lock striped by `key`: digest windows and throttle counters are read and written
    /// under it, so two runs joining one window at once both land in it.
    pub fn lock(&self, key: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        let h = fnv1a(key.iter().copied());
        self.locks[(h % self.locks.len() as u64) as usize].lock()
    }

    /// A new trigger id: milliseconds since the epoch times 1,024, plus a counter, always
    /// above every id before (so ids sort by time and survive a restart).
    pub fn next_trigger_id(&self, now_ms: u64) -> u64 {
        let floor = now_ms.saturating_mul(1024);
        let mut cur = self.last_trigger.load(Ordering::Relaxed);
        loop {
            let next = floor.max(cur + 1);
            match self.last_trigger.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    // --- subscribers -------------------------------------------------------------------

    /// Saves subscribers (replacing those with the same ids) and persists.
    pub fn put_subscribers(&self, subs: &[Subscriber]) -> Result<()> {
        let mut b = self.db.batch();
        for s in subs {
            b.insert(&self.ks.subscribers, s.id.as_bytes(), json(s));
        }
        b.commit()?;
        self.persist()
    }

    /// The subscriber `id`.
    pub fn subscriber(&self, id: &str) -> Result<Option<Subscriber>> {
        get(&self.ks.subscribers, id.as_bytes())
    }

    /// Deletes a subscriber with its preferences and topic memberships; `false` if unknown.
    pub fn delete_subscriber(&self, id: &str) -> Result<bool> {
        if self.ks.subscribers.get(id.as_bytes())?.is_none() {
            return Ok(false);
        }
        let mut b = self.db.batch();
        b.remove(&self.ks.subscribers, id.as_bytes());
        b.remove(&self.ks.prefs, id.as_bytes());
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(0);
        for g in self.ks.member_of.prefix(&prefix) {
            let k = g.key()?;
            let topic = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            b.remove(&self.ks.member_of, k.to_vec());
            b.remove(&self.ks.members, two(&topic, id));
        }
        b.commit()?;
        self.persist()?;
        Ok(true)
    }

    /// A page of subscribers by id.
    pub fn subscribers(&self, after: Option<&str>, limit: usize) -> Result<Page<Subscriber>> {
        let start = after.map(|a| {
            let mut k = a.as_bytes().to_vec();
            k.push(0);
            k
        });
        let iter = match &start {
            Some(s) => self.ks.subscribers.range(s.clone()..),
            None => self.ks.subscribers.iter(),
        };
        let mut items = Vec::new();
        for g in iter.take(limit + 1) {
            let (_, v) = g.into_inner()?;
            items.push(serde_json::from_slice::<Subscriber>(&v)?);
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// How many subscribers (approximate for large stores).
    pub fn subscriber_count(&self) -> usize {
        self.ks.subscribers.approximate_len()
    }

    // --- preferences -------------------------------------------------------------------

    /// A subscriber's preferences (defaults when none were set).
    pub fn preferences(&self, id: &str) -> Result<Preferences> {
        Ok(get(&self.ks.prefs, id.as_bytes())?.unwrap_or_default())
    }

    /// Merges `patch` into a subscriber's preferences and persists; returns the result.
    pub fn update_preferences(&self, id: &str, patch: Preferences) -> Result<Preferences> {
        let _g = self.lock(id.as_bytes());
        let mut p = self.preferences(id)?;
        p.merge(patch);
        self.ks.prefs.insert(id.as_bytes(), json(&p))?;
        self.persist()?;
        Ok(p)
    }

    // --- topics ------------------------------------------------------------------------

    /// Saves a topic and persists.
    pub fn put_topic(&self, t: &Topic) -> Result<()> {
        self.ks.topics.insert(t.key.as_bytes(), json(t))?;
        self.persist()
    }

    /// The topic `key`.
    pub fn topic(&self, key: &str) -> Result<Option<Topic>> {
        get(&self.ks.topics, key.as_bytes())
    }

    /// Every topic.
    pub fn topics(&self) -> Result<Vec<Topic>> {
        let mut out = Vec::new();
        for g in self.ks.topics.iter() {
            let (_, v) = g.into_inner()?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Deletes a topic and its memberships; `false` if unknown.
    pub fn delete_topic(&self, key: &str) -> Result<bool> {
        if self.ks.topics.get(key.as_bytes())?.is_none() {
            return Ok(false);
        }
        let mut prefix = key.as_bytes().to_vec();
        prefix.push(0);
        let mut b = self.db.batch();
        b.remove(&self.ks.topics, key.as_bytes());
        for g in self.ks.members.prefix(&prefix) {
            let k = g.key()?;
            let sub = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            b.remove(&self.ks.members, k.to_vec());
            b.remove(&self.ks.member_of, two(&sub, key));
        }
        b.commit()?;
        self.persist()?;
        Ok(true)
    }

    /// Adds (or with `add == false` removes) subscribers to a topic and persists.
    pub fn set_members(&self, topic: &str, subs: &[String], add: bool) -> Result<()> {
        let mut b = self.db.batch();
        for s in subs {
            if add {
                b.insert(&self.ks.members, two(topic, s), b"".as_slice());
                b.insert(&self.ks.member_of, two(s, topic), b"".as_slice());
            } else {
                b.remove(&self.ks.members, two(topic, s));
                b.remove(&self.ks.member_of, two(s, topic));
            }
        }
        b.commit()?;
        self.persist()
    }

    /// Up to `limit` subscriber ids of `topic` after `after`, in id order.
    pub fn members(&self, topic: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut prefix = topic.as_bytes().to_vec();
        prefix.push(0);
        let start = match after {
            Some(a) => {
                let mut k = two(topic, a);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut end = topic.as_bytes().to_vec();
        end.push(1);
        let mut out = Vec::with_capacity(limit.min(4096));
        for g in self.ks.members.range(start..end).take(limit) {
            let k = g.key()?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    // --- workflows ---------------------------------------------------------------------

    /// Saves a workflow definition and persists.
    pub fn put_workflow(&self, w: &WorkflowDef) -> Result<()> {
        self.ks.workflows.insert(w.id.as_bytes(), json(w))?;
        self.persist()
    }

    /// Deletes a workflow definition; `false` if unknown.
    pub fn delete_workflow(&self, id: &str) -> Result<bool> {
        if self.ks.workflows.get(id.as_bytes())?.is_none() {
            return Ok(false);
        }
        self.ks.workflows.remove(id.as_bytes())?;
        self.persist()?;
        Ok(true)
    }

    /// Every workflow defined through the API.
    pub fn workflows(&self) -> Result<Vec<WorkflowDef>> {
        let mut out = Vec::new();
        for g in self.ks.workflows.iter() {
            let (_, v) = g.into_inner()?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    // --- triggers and idempotency ------------------------------------------------------

    /// Saves a trigger (not persisted: the caller persists with its other writes).
    pub fn put_trigger(&self, t: &Trigger) -> Result<()> {
        self.ks.triggers.insert(t.id.to_be_bytes(), json(t))?;
        Ok(())
    }

    /// The trigger `id`.
    pub fn trigger(&self, id: u64) -> Result<Option<Trigger>> {
        get(&self.ks.triggers, &id.to_be_bytes())
    }

    /// Claims an idempotency key: `Ok(None)` when it is new (now recorded in flight),
    /// else the record already there.
    pub fn claim_idempotency(&self, key: &str, rec: &Idempotency) -> Result<Option<Idempotency>> {
        let _g = self.lock(key.as_bytes());
        if let Some(r) = get::<Idempotency>(&self.ks.idem, key.as_bytes())? {
            return Ok(Some(r));
        }
        self.ks.idem.insert(key.as_bytes(), json(rec))?;
        Ok(None)
    }

    /// Records the reply of the request that claimed `key`.
    pub fn finish_idempotency(&self, key: &str, rec: &Idempotency) -> Result<()> {
        self.ks.idem.insert(key.as_bytes(), json(rec))?;
        Ok(())
    }

    /// Forgets an idempotency claim whose request failed before anything was accepted.
    pub fn release_idempotency(&self, key: &str) -> Result<()> {
        self.ks.idem.remove(key.as_bytes())?;
        Ok(())
    }

    // --- messages and activity ---------------------------------------------------------

    /// Read-modify-writes messages: under one lock (so that two jobs touching one message —
    /// its email and its SMS sends, a send and the run after a delay — never lose each
    /// other's changes), shows `f` each of `ids` as stored now (see [`Fresh`]) and writes what
    /// it returns (`None`: leave it), with `events` appended to the activity trails, in one
    /// batch. Not persisted; see [`Store::persist`].
    ///
    /// `prepared` holds, per message, the bytes to write if the stored record still hashes
    /// to the given value (0: if none is stored): the common case, serialised before the
    /// lock is taken, so that the lock covers reads and hash checks only.
    pub fn update(
        &self,
        ids: &[MsgId],
        events: Vec<(MsgId, Event)>,
        mut prepared: HashMap<MsgId, (u64, String, Vec<u8>)>,
        mut f: impl FnMut(MsgId, Fresh<'_>) -> Result<Option<Message>>,
    ) -> Result<()> {
        let mut b = self.db.batch();
        let _g = self.write_lock.lock();
        for &id in ids {
            let raw = self.ks.messages.get(id.key())?;
            let fresh = Fresh {
                bytes: raw.as_deref(),
                hash: raw.as_deref().map(hash).unwrap_or(0),
            };
            let existed = fresh.exists();
            let (bytes, subscriber) = match prepared.remove(&id) {
                Some((h, sub, bytes)) if h == fresh.hash => (bytes, sub),
                _ => match f(id, fresh)? {
                    Some(m) => (json(&m), m.subscriber),
                    None => continue,
                },
            };
            b.insert(&self.ks.messages, id.key(), bytes);
            if !existed {
                let mut k = subscriber.into_bytes();
                k.push(0);
                k.extend_from_slice(&id.key());
                b.insert(&self.ks.by_subscriber, k, b"".as_slice());
            }
        }
        for (id, e) in events {
            let seq = self.event_seq.fetch_add(1, Ordering::Relaxed);
            let mut k = Vec::with_capacity(24);
            k.extend_from_slice(&id.key());
            k.extend_from_slice(&e.at_ms.to_be_bytes());
            k.extend_from_slice(&seq.to_be_bytes());
            b.insert(&self.ks.activity, k, json(&e));
        }
        b.commit()?;
        Ok(())
    }

    /// The message `id`.
    pub fn message(&self, id: MsgId) -> Result<Option<Message>> {
        match self.ks.messages.get(id.key())? {
            None => Ok(None),
            Some(v) => {
                let mut m: Message = serde_json::from_slice(&v)?;
                m.read_hash = hash(&v);
                Ok(Some(m))
            }
        }
    }

    /// Several messages at once (absent ones skipped).
    pub fn messages(&self, ids: &[MsgId]) -> Result<Vec<Message>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.message(*id)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// A message's activity trail, oldest first.
    pub fn activity(&self, id: MsgId) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for g in self.ks.activity.prefix(id.key()) {
            let (_, v) = g.into_inner()?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Messages newest first, filtered; `cursor` is the last id of the previous page.
    pub fn activity_feed(
        &self,
        f: &ActivityFilter,
        cursor: Option<MsgId>,
        limit: usize,
    ) -> Result<Page<Message>> {
        let keep = |m: &Message| {
            f.workflow.as_ref().is_none_or(|w| &m.workflow == w)
                && f.subscriber.as_ref().is_none_or(|s| &m.subscriber == s)
                && f.status.is_none_or(|s| m.status == s)
                && f.channel
                    .is_none_or(|c| m.deliveries.iter().any(|d| d.channel == c))
        };
        let mut items = Vec::new();
        let mut last = None;
        let mut scanned = 0usize;
        let mut more = false;
        let mut take = |m: Message, items: &mut Vec<Message>| {
            last = Some(m.id);
            if keep(&m) {
                items.push(m);
            }
        };
        if let Some(sub) = &f.subscriber {
            // The subscriber index: newest first.
            let mut lo = sub.as_bytes().to_vec();
            lo.push(0);
            let mut hi = lo.clone();
            match cursor {
                Some(c) => hi.extend_from_slice(&c.key()),
                None => hi.extend_from_slice(&[0xff; 12]),
            }
            for g in self.ks.by_subscriber.range(lo.clone()..hi).rev() {
                let k = g.key()?;
                let Some(id) = MsgId::from_key(&k[lo.len()..]) else {
                    continue;
                };
                if items.len() == limit || scanned == SCAN_LIMIT {
                    more = true;
                    break;
                }
                scanned += 1;
                if let Some(m) = self.message(id)? {
                    take(m, &mut items);
                }
            }
        } else {
            let hi = match cursor {
                Some(c) => c.key().to_vec(),
                None => vec![0xff; 12],
            };
            let lo = match f.trigger {
                Some(t) => t.to_be_bytes().to_vec(),
                None => Vec::new(),
            };
            let hi = match f.trigger {
                Some(t) if cursor.is_none() => MsgId {
                    trigger: t,
                    n: u32::MAX,
                }
                .key()
                .to_vec(),
                _ => hi,
            };
            for g in self.ks.messages.range(lo..hi).rev() {
                if items.len() == limit || scanned == SCAN_LIMIT {
                    more = true;
                    break;
                }
                scanned += 1;
                let (_, v) = g.into_inner()?;
                take(serde_json::from_slice(&v)?, &mut items);
            }
        }
        Ok(Page {
            items,
            next_cursor: if more {
                last.map(|l| l.to_string())
            } else {
                None
            },
        })
    }

    // --- digests and throttles ---------------------------------------------------------

    /// The digest window under `key`.
    pub fn digest(&self, key: &str) -> Result<Option<Digest>> {
        get(&self.ks.digests, key.as_bytes())
    }

    /// Saves (or with `None` removes) the digest window under `key`.
    pub fn put_digest(&self, key: &str, d: Option<&Digest>) -> Result<()> {
        match d {
            Some(d) => self.ks.digests.insert(key.as_bytes(), json(d))?,
            None => self.ks.digests.remove(key.as_bytes())?,
        }
        Ok(())
    }

    /// Counts one run against the throttle `key`: `true` if it is within `limit` for the
    /// fixed window of `window_ms` containing `now`.
    pub fn throttle(&self, key: &str, limit: u32, window_ms: u64, now: u64) -> Result<bool> {
        let _g = self.lock(key.as_bytes());
        let window = now / window_ms.max(1);
        let (w, n) = match self.ks.throttles.get(key.as_bytes())? {
            Some(v) if v.len() == 12 => {
                let w = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                let n = u32::from_be_bytes(v[8..].try_into().unwrap_or([0; 4]));
                (w, n)
            }
            _ => (window, 0),
        };
        let n = if w == window { n } else { 0 };
        if n >= limit {
            return Ok(false);
        }
        let mut v = window.to_be_bytes().to_vec();
        v.extend_from_slice(&(n + 1).to_be_bytes());
        self.ks.throttles.insert(key.as_bytes(), v)?;
        Ok(true)
    }

    // --- aggregates --------------------------------------------------------------------

    /// Counts an outcome for today's aggregates (kept in memory, written by
    /// [`Store::flush_stats`]).
    pub fn count(&self, now_ms: u64, workflow: &str, channel: &str, provider: &str, outcome: &str) {
        let k = StatKey {
            day: (now_ms / 86_400_000) as u32,
            workflow: workflow.to_string(),
            channel: channel.to_string(),
            provider: provider.to_string(),
            outcome: outcome.to_string(),
        };
        *self.stats.lock().entry(k).or_default() += 1;
    }

    /// Adds the counts gathered in memory to the stored aggregates, and persists.
    pub fn flush_stats(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.stats.lock());
        if pending.is_empty() {
            return Ok(());
        }
        let _g = self.lock(b"stats");
        let result = self.add_stats(&pending);
        if result.is_err() {
            // Keep them for the next flush.
            let mut m = self.stats.lock();
            for (k, n) in pending {
                *m.entry(k).or_default() += n;
            }
        }
        result
    }

    fn add_stats(&self, pending: &HashMap<StatKey, u64>) -> Result<()> {
        let mut b = self.db.batch();
        for (k, &n) in pending {
            let key = k.key();
            let had = self
                .ks
                .stats
                .get(&key)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            b.insert(&self.ks.stats, key, (had + n).to_be_bytes());
        }
        b.commit()?;
        self.persist()
    }

    /// The aggregates of days `from..=to`.
    pub fn stats(&self, from_day: u32, to_day: u32) -> Result<Vec<(StatKey, u64)>> {
        let mut out = Vec::new();
        let hi = to_day.saturating_add(1).to_be_bytes();
        for g in self.ks.stats.range(from_day.to_be_bytes()..hi) {
            let (k, v) = g.into_inner()?;
            let Some(key) = StatKey::from_key(&k) else {
                continue;
            };
            let n = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            out.push((key, n));
        }
        Ok(out)
    }
}

/// What one archiving pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchiveReport {
    /// Messages written to the archive and deleted.
    pub messages: u64,
    /// Activity events with them.
    pub events: u64,
    /// Archive files written to (one per day of `created_ms`).
    pub files: Vec<std::path::PathBuf>,
    /// Idempotency keys forgotten.
    pub idempotency_keys: u64,
}

/// The archive file of a day: `DIR/YYYY-MM-DD.ndjson.gz`.
pub fn archive_file(dir: &Path, day: u32) -> std::path::PathBuf {
    dir.join(format!("{}.ndjson.gz", crate::api::date_of(day)))
}

impl Store {
    /// Moves every message made before `before_ms` (with its activity trail) into the
    /// archive — gzip-compressed NDJSON, one file per day, each line `{"message": ...,
    /// "activity": [...]}` — then deletes it, its index entry and its trigger. A file is
    /// fsynced before anything it holds is deleted; a pass interrupted between the two
    /// writes those messages again next time (a reader sees them twice, nothing is lost).
    /// Also forgets idempotency keys older than `idempotency_ms`.
    pub fn archive(
        &self,
        before_ms: u64,
        idempotency_ms: u64,
        now_ms: u64,
        dir: &Path,
    ) -> Result<ArchiveReport> {
        use std::io::Write;
        let mut report = ArchiveReport::default();
        let hi = before_ms.saturating_mul(1024).to_be_bytes();
        loop {
            // One chunk at a time, so memory stays bounded however much is due.
            let mut chunk: Vec<Message> = Vec::new();
            for g in self.ks.messages.range(..hi.to_vec()).take(10_000) {
                let (_, v) = g.into_inner()?;
                chunk.push(serde_json::from_slice(&v)?);
            }
            if chunk.is_empty() {
                break;
            }
            std::fs::create_dir_all(dir).map_err(|e| StoreError(e.to_string()))?;
            let mut by_day: std::collections::BTreeMap<u32, Vec<&Message>> = Default::default();
            for m in &chunk {
                by_day
                    .entry((m.created_ms / 86_400_000) as u32)
                    .or_default()
                    .push(m);
            }
            let mut b = self.db.batch();
            let mut triggers = std::collections::BTreeSet::new();
            for (day, msgs) in by_day {
                let path = archive_file(dir, day);
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
                let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
                for m in msgs {
                    let activity = self.activity(m.id)?;
                    report.events += activity.len() as u64;
                    let line = serde_json::json!({"message": m, "activity": activity});
                    serde_json::to_writer(&mut gz, &line)?;
                    gz.write_all(
                        b"
",
                    )
                    .map_err(|e| StoreError(e.to_string()))?;
                    b.remove(&self.ks.messages, m.id.key());
                    for g in self.ks.activity.prefix(m.id.key()) {
                        b.remove(&self.ks.activity, g.key()?.to_vec());
                    }
                    let mut k = m.subscriber.as_bytes().to_vec();
                    k.push(0);
                    k.extend_from_slice(&m.id.key());
                    b.remove(&self.ks.by_subscriber, k);
                    triggers.insert(m.id.trigger);
                    report.messages += 1;
                }
                let f = gz.finish().map_err(|e| StoreError(e.to_string()))?;
                f.sync_all().map_err(|e| StoreError(e.to_string()))?;
                if !report.files.contains(&path) {
                    report.files.push(path);
                }
            }
            for t in triggers {
                b.remove(&self.ks.triggers, t.to_be_bytes());
            }
            b.commit()?;
            self.persist()?;
        }
        let cutoff = now_ms.saturating_sub(idempotency_ms);
        let mut b = self.db.batch();
        for g in self.ks.idem.iter() {
            let (k, v) = g.into_inner()?;
            let rec: Idempotency = serde_json::from_slice(&v)?;
            if rec.at_ms < cutoff && rec.reply.is_some() {
                b.remove(&self.ks.idem, k.to_vec());
                report.idempotency_keys += 1;
            }
        }
        b.commit()?;
        self.persist()?;
        Ok(report)
    }
}

/// Reads an archive file: each line a JSON object with `message` and `activity`.
pub fn read_archive(
    path: &Path,
    mut each: impl FnMut(serde_json::Value) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    use std::io::BufRead;
    let f = std::fs::File::open(path)?;
    // Each pass appends a gzip member; MultiGzDecoder reads them all.
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f));
    let mut n = 0;
    for line in r.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let v = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        each(v)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_ids_rise_across_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let a = s.next_trigger_id(1_000);
        let b = s.next_trigger_id(1_000);
        assert!(b > a);
        let t = Trigger {
            id: b,
            workflow: "w".into(),
            to: Recipients::One("u".into()),
            payload: serde_json::json!({}),
            class: Class::Bulk,
            created_ms: 1_000,
            messages: 0,
            fanned_out: true,
            idempotency_key: None,
        };
        s.put_trigger(&t).expect("put");
        s.persist().expect("persist");
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert!(
            s.next_trigger_id(0) > b,
            "a clock gone back still gives a new id"
        );
    }

    #[test]
    fn a_throttle_lets_limit_runs_through_per_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let through: Vec<bool> = (0..4)
            .map(|_| s.throttle("k", 2, 1_000, 5_500).expect("throttle"))
            .collect();
        assert_eq!(through, [true, true, false, false]);
        assert!(s.throttle("k", 2, 1_000, 6_000).expect("next window"));
    }

    #[test]
    fn old_messages_move_to_the_archive_and_can_be_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("db")).expect("open");
        let day = 86_400_000u64;
        let msg = |t: u64, created: u64| Message {
            id: MsgId { trigger: t, n: 0 },
            workflow: "w".into(),
            subscriber: "u".into(),
            class: Class::Bulk,
            status: Status::Queued,
            created_ms: created,
            updated_ms: created,
            pc: 0,
            wait: None,
            deliveries: Vec::new(),
            read_hash: 0,
        };
        let old = msg(10 * day * 1024, 10 * day);
        let new = msg(200 * day * 1024, 200 * day);
        let (o, n) = (old.clone(), new.clone());
        s.update(
            &[old.id, new.id],
            vec![(old.id, Event::new(10 * day, None, "triggered", "x"))],
            Default::default(),
            |id, _| Ok(Some(if id == o.id { o.clone() } else { n.clone() })),
        )
        .expect("write");
        let arch = dir.path().join("archive");
        let r = s
            .archive(100 * day, day, 200 * day, &arch)
            .expect("archive");
        assert_eq!((r.messages, r.events, r.files.len()), (1, 1, 1));
        assert!(s.message(old.id).expect("read").is_none(), "deleted");
        assert!(s.activity(old.id).expect("read").is_empty());
        assert!(
            s.message(new.id).expect("read").is_some(),
            "recent ones stay"
        );
        let mut seen = Vec::new();
        let n = read_archive(&r.files[0], |v| {
            seen.push(v);
            Ok(())
        })
        .expect("read back");
        assert_eq!(n, 1);
        assert_eq!(seen[0]["message"]["id"], old.id.to_string());
        assert_eq!(seen[0]["activity"][0]["kind"], "triggered");
        assert_eq!(
            r.files[0].file_name().and_then(|f| f.to_str()),
            Some("1970-01-11.ndjson.gz")
        );
    }

    #[test]
    fn topic_members_page_in_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let subs: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
        s.set_members("t", &subs, true).expect("add");
        s.set_members("tt", &["x".to_string()], true)
            .expect("add other");
        let first = s.members("t", None, 3).expect("page");
        assert_eq!(first, ["u0", "u1", "u2"]);
        let rest = s.members("t", Some("u2"), 3).expect("page");
        assert_eq!(rest, ["u3", "u4"]);
    }
}
