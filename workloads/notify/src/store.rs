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
use foldhash::{HashMap, HashMapExt, HashSet};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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
    /// What it says: shared by the deliveries of one rendering (a subscriber's addresses on
    /// a channel) and by the copies a send job reads, never copied per use.
    pub content: Arc<Content>,
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
    /// Its deliveries. A delivery's changing part (status, provider, attempts, route) is
    /// written by send jobs into a record of its own (see [`DeliveryState`]); a message read
    /// from the store shows them merged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<Delivery>,
    /// The activity of its run (triggered, steps, queued sends), kept in the record the run
    /// writes anyway; provider events live with the deliveries' states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trail: Vec<Event>,
}

/// The changing part of one delivery, written by the send jobs that handle it, so that a
/// send never rewrites (or locks) the message: its status, the provider that has it, the
/// calls made, its route number, and the provider events of its trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Where it stands.
    pub status: DeliveryStatus,
    /// The provider that accepted it, or has it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Provider calls made for it.
    pub attempts: u32,
    /// The provider's id for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Its route number.
    pub route: u32,
    /// Its provider events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

impl DeliveryState {
    /// The state a delivery starts with.
    pub fn of(d: &Delivery) -> DeliveryState {
        DeliveryState {
            status: d.status,
            provider: d.provider.clone(),
            attempts: d.attempts,
            provider_id: d.provider_id.clone(),
            route: d.route,
            events: Vec::new(),
        }
    }

    fn apply_to(&self, d: &mut Delivery) {
        d.status = self.status;
        d.provider = self.provider.clone();
        d.attempts = self.attempts;
        d.provider_id = self.provider_id.clone();
        d.route = self.route;
    }
}

/// A send job's new state for one delivery, written only if the delivery is still on the
/// route the job read (see [`Store::write_states`]).
#[derive(Debug, Clone)]
pub struct StateUpdate {
    /// The message.
    pub id: MsgId,
    /// The send step.
    pub pc: u16,
    /// The address index.
    pub idx: u8,
    /// The route the job handled it under.
    pub route: u32,
    /// Its new state; `events` are appended to those stored.
    pub state: DeliveryState,
}

/// What a run job has written, so that a repeat (a worker died after its commit, or two
/// attempts overlapped) writes nothing again and derives its next jobs from the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMark {
    /// Messages recorded by a trigger request, from number `first`.
    Created {
        /// The trigger.
        trigger: u64,
        /// The first message's number.
        first: u32,
    },
    /// A run job (or a digest's continuation) from step `pc` starting with message `first`.
    Ran {
        /// The trigger.
        trigger: u64,
        /// The step.
        pc: u16,
        /// The first message's number.
        first: u32,
        /// A digest's continuation.
        digest: bool,
    },
}

impl RunMark {
    fn key(self) -> [u8; 16] {
        let mut k = [0u8; 16];
        let (t, tag, pc, first) = match self {
            RunMark::Created { trigger, first } => (trigger, b'c', 0, first),
            RunMark::Ran {
                trigger,
                pc,
                first,
                digest,
            } => (trigger, if digest { b'd' } else { b'r' }, pc, first),
        };
        k[..8].copy_from_slice(&t.to_be_bytes());
        k[8] = tag;
        k[9..11].copy_from_slice(&pc.to_be_bytes());
        k[11..15].copy_from_slice(&first.to_be_bytes());
        k
    }
}

fn state_key(id: MsgId, pc: u16, idx: u8) -> [u8; 15] {
    let mut k = [0u8; 15];
    k[..12].copy_from_slice(&id.key());
    k[12..14].copy_from_slice(&pc.to_be_bytes());
    k[14] = idx;
    k
}

/// FNV-1a: a hash that is the same in every build and version, for what is stored (an
/// idempotency key's request fingerprint) or sent (a call's idempotency key).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
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
    pub kind: Cow<'static, str>,
    /// In words.
    pub detail: String,
    /// The provider, for provider events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's HTTP status (SMTP: its reply code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the provider's answer (at most 512 bytes): one call's, shared by the
    /// events of every delivery it carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Arc<str>>,
    /// How long the provider call took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

impl Event {
    /// A plain event.
    pub fn new(
        at_ms: u64,
        pc: Option<u16>,
        kind: &'static str,
        detail: impl Into<String>,
    ) -> Event {
        Event {
            at_ms,
            pc,
            kind: Cow::Borrowed(kind),
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
    states: Keyspace,
    dead: Keyspace,
    runs: Keyspace,
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
    stats: Arc<parking_lot::Mutex<HashMap<StatKey, u64>>>,
    locks: Arc<Vec<parking_lot::Mutex<()>>>,
    sync: Arc<GroupSync>,
    recent: Arc<parking_lot::Mutex<Recent>>,
}

/// Message records this process wrote last, as written, so that the send jobs that follow a
/// run read them from memory instead of decoding them from disk (a bulk send reads every
/// message once more to send it). Runs are the only writers of message records
/// ([`Store::write_run`]) and update this under the same lock as their batch; the archive
/// drops what it deletes. Bounded: the oldest entries go first, and a miss reads the disk,
/// so the cache changes speed, never results.
struct Recent {
    map: HashMap<MsgId, Arc<Message>>,
    order: std::collections::VecDeque<MsgId>,
    cap: usize,
}

/// Messages kept in [`Recent`] (about 1 KiB each in memory): more than a bulk send's runs
/// get ahead of its sends in `weir-notify bench` (50,000 did as well as 200,000 there).
const RECENT_MESSAGES: usize = 50_000;

impl Recent {
    fn new(cap: usize) -> Recent {
        Recent {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            cap,
        }
    }

    fn put(&mut self, m: Message) {
        if self.cap == 0 {
            return;
        }
        let id = m.id;
        self.map.insert(id, Arc::new(m));
        self.order.push_back(id);
        // An id written twice is in `order` twice: its older place may evict the newer
        // entry early, which costs a read from disk and nothing else.
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// The group commit's tickets (see [`Store::persist`]).
#[derive(Default)]
struct GroupSync {
    /// Tickets taken: one per `persist` call, after its writes.
    written: AtomicU64,
    /// Every ticket up to this one is on disk.
    synced: AtomicU64,
    /// One fsync at a time.
    lock: parking_lot::Mutex<()>,
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

/// The first byte of a record in the binary encoding: 0xC1 is the one byte MessagePack
/// never uses, and no JSON text starts with it, so records written before (JSON) and after
/// read side by side.
const BINARY: u8 = 0xC1;

/// The records the pipeline writes and reads for every message — messages, delivery
/// states, subscribers and preferences — are MessagePack (fields by name, so that
/// `#[serde(default)]` and skipped fields work as in JSON): about half of JSON's bytes,
/// which the journal, the memtables and every flush and compaction carry, and no text to
/// escape or scan. The rest stay JSON.
fn binary<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(BINARY);
    // Encoding our own records into memory cannot fail: every map key is a string.
    match rmp_serde::encode::write_named(&mut out, v) {
        Ok(()) => out,
        Err(_) => json(v),
    }
}

/// A record in either encoding (see [`binary`]).
fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => rmp_serde::from_slice(rest)
            .map_err(|e| StoreError(format!("a record does not decode: {e}"))),
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

fn get<T: for<'de> Deserialize<'de>>(ks: &Keyspace, key: &[u8]) -> Result<Option<T>> {
    match ks.get(key)? {
        None => Ok(None),
        Some(v) => Ok(Some(decode(&v)?)),
    }
}

/// Whether `n` keys from `lo` to `hi` are close enough together to be read with one range
/// scan rather than one read each: their first 8 bytes (the trigger) agree and the rest
/// spans at most a few times `n` message numbers.
fn dense(lo: &[u8], hi: &[u8], n: usize) -> bool {
    let num = |k: &[u8]| {
        k.get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    n > 1
        && lo.get(..8) == hi.get(..8)
        && matches!((num(lo), num(hi)), (Some(a), Some(b)) if ((b - a) as usize) < 4 * n + 16)
}

/// The smallest key above every key that starts with `id`'s.
fn key_after(id: MsgId) -> Vec<u8> {
    let mut k = id.key().to_vec();
    while let Some(last) = k.pop() {
        if last < u8::MAX {
            k.push(last + 1);
            return k;
        }
    }
    vec![u8::MAX; 13]
}

/// Merges one stored delivery state (key: message, step, address index) into its message.
fn overlay(m: &mut Message, key: &[u8], value: &[u8]) -> Result<()> {
    let (Some(pc), Some(&idx)) = (
        key.get(12..14)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes),
        key.get(14),
    ) else {
        return Ok(());
    };
    let s: DeliveryState = decode(value)?;
    if let Some(d) = m.deliveries.iter_mut().find(|d| d.pc == pc && d.idx == idx) {
        s.apply_to(d);
    }
    Ok(())
}

/// The records under `ids` in a keyspace keyed by id, by id. A run's subscribers are a page
/// of a topic's members, in id order and mostly next to each other in the keyspace, so they
/// are read with one range scan from the first to the last; when the scan meets too many
/// other records in between (the ids are far apart), the rest are read one by one.
fn read_many<T: for<'de> Deserialize<'de>>(
    ks: &Keyspace,
    ids: &[&str],
) -> Result<HashMap<String, Arc<T>>> {
    let mut keys: Vec<&str> = ids.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let mut out = HashMap::with_capacity(keys.len());
    let (Some(&first), Some(&last)) = (keys.first(), keys.last()) else {
        return Ok(out);
    };
    let mut rest: &[&str] = &keys;
    if keys.len() >= 8 {
        let budget = 4 * keys.len() + 64;
        let mut end = last.as_bytes().to_vec();
        end.push(0);
        let mut scanned = 0;
        rest = &[];
        for g in ks.range(first.as_bytes().to_vec()..end) {
            let (k, v) = g.into_inner()?;
            let Ok(k) = std::str::from_utf8(&k) else {
                continue;
            };
            scanned += 1;
            if scanned > budget {
                // Far apart: the ids above this one, one read each.
                let at = keys.partition_point(|x| *x < k);
                rest = &keys[at..];
                break;
            }
            if keys.binary_search(&k).is_ok() {
                out.insert(k.to_string(), Arc::new(decode(&v)?));
            }
        }
    }
    for k in rest {
        if let Some(v) = ks.get(k.as_bytes())? {
            out.insert(k.to_string(), Arc::new(decode(&v)?));
        }
    }
    Ok(out)
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
            // More background workers than fjall's default (one per core): under a steady
            // write load its first worker passes compaction requests on to busy peers and
            // spins doing so (fjall 3.1.13); with four, an idle one takes them. Measured:
            // +5 % messages/s in `weir-notify bench`.
            .worker_threads(4)
            .open()?;
        let open = |name: &str| {
            // The message and activity keyspaces take the write load: bigger memtables mean
            // fewer, larger flushes and less compaction.
            let memtable = match name {
                "messages" | "delivery_states" => 64 << 20,
                _ => 16 << 20,
            };
            db.keyspace(name, || {
                let o = KeyspaceCreateOptions::default().max_memtable_size(memtable);
                if memtable > 16 << 20 {
                    // Compressed from the first flush on: JSON records shrink about 4x, and
                    // writing the bytes costs more than compressing them.
                    o.data_block_compression_policy(fjall::config::CompressionPolicy::all(
                        fjall::CompressionType::Lz4,
                    ))
                } else {
                    o
                }
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
            states: open("delivery_states")?,
            dead: open("dead_deliveries")?,
            runs: open("run_marks")?,
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
            stats: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            locks: Arc::new((0..256).map(|_| parking_lot::Mutex::new(())).collect()),
            sync: Arc::new(GroupSync::default()),
            recent: Arc::new(parking_lot::Mutex::new(Recent::new(RECENT_MESSAGES))),
        })
    }

    /// Makes every write so far durable (fsync of the journal). Concurrent callers share
    /// fsyncs (a group commit): fjall syncs under its journal's lock, which every write
    /// waits for, so one fsync per job would serialise the jobs' writes behind the disk.
    /// A caller whose writes an fsync that started after them already covered returns at
    /// once.
    pub fn persist(&self) -> Result<()> {
        let mine = self.sync.written.fetch_add(1, Ordering::AcqRel) + 1;
        let _one = self.sync.lock.lock();
        if self.sync.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        // Every ticket up to here was taken after its writes were committed.
        let upto = self.sync.written.load(Ordering::Acquire);
        self.db.persist(PersistMode::SyncData)?;
        self.sync.synced.fetch_max(upto, Ordering::AcqRel);
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
            b.insert(&self.ks.subscribers, s.id.as_bytes(), binary(s));
        }
        b.commit()?;
        self.persist()
    }

    /// The subscriber `id`.
    pub fn subscriber(&self, id: &str) -> Result<Option<Subscriber>> {
        get(&self.ks.subscribers, id.as_bytes())
    }

    /// The subscribers among `ids`, by id (see [`read_many`]); shared, as a run's templates
    /// hold them.
    pub fn subscribers_by_id(&self, ids: &[&str]) -> Result<HashMap<String, Arc<Subscriber>>> {
        read_many(&self.ks.subscribers, ids)
    }

    /// The preferences set for any of `ids`, by subscriber id (absent: the defaults).
    pub fn preferences_by_id(&self, ids: &[&str]) -> Result<HashMap<String, Arc<Preferences>>> {
        read_many(&self.ks.prefs, ids)
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
            items.push(decode::<Subscriber>(&v)?);
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
        self.ks.prefs.insert(id.as_bytes(), binary(&p))?;
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
            out.push(decode(&v)?);
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
            out.push(decode(&v)?);
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

    /// Whether a run job (or a trigger's recording) has already written its messages.
    pub fn marked(&self, mark: RunMark) -> Result<bool> {
        Ok(self.ks.runs.get(mark.key())?.is_some())
    }

    /// Writes the messages a run decided, with `new` naming those it made (indexed by
    /// subscriber), and its mark — unless the mark is already there (another attempt of the
    /// same job committed first: `Ok(false)`, nothing written). One batch, under one lock,
    /// so that of two overlapping attempts exactly one writes. Not persisted; see
    /// [`Store::persist`].
    pub fn write_run(&self, mark: RunMark, msgs: Vec<Message>, new: &[MsgId]) -> Result<bool> {
        // Encoded before the lock is taken: the lock covers one read and the batch.
        let encoded: Vec<([u8; 12], Vec<u8>)> =
            msgs.iter().map(|m| (m.id.key(), binary(m))).collect();
        let mut b = self.db.batch();
        for (k, v) in encoded {
            b.insert(&self.ks.messages, k, v);
        }
        let new: HashSet<MsgId> = new.iter().copied().collect();
        for m in msgs.iter().filter(|m| new.contains(&m.id)) {
            let mut k = m.subscriber.as_bytes().to_vec();
            k.push(0);
            k.extend_from_slice(&m.id.key());
            b.insert(&self.ks.by_subscriber, k, b"".as_slice());
        }
        b.insert(&self.ks.runs, mark.key(), b"".as_slice());
        let _g = self.write_lock.lock();
        if self.ks.runs.get(mark.key())?.is_some() {
            return Ok(false);
        }
        b.commit()?;
        let mut recent = self.recent.lock();
        for m in msgs {
            recent.put(m);
        }
        Ok(true)
    }

    /// Writes send jobs' new delivery states: each only if the delivery is still on the
    /// route its job handled (a stale attempt, whose deliveries another attempt has moved
    /// on, changes nothing), its events appended to those stored. Returns, per update,
    /// whether it was written. Not persisted; see [`Store::persist`].
    pub fn write_states(&self, updates: Vec<StateUpdate>) -> Result<Vec<bool>> {
        let mut written = Vec::with_capacity(updates.len());
        let mut b = self.db.batch();
        let _g = self.write_lock.lock();
        let stored = self.states_of(updates.iter().map(|u| state_key(u.id, u.pc, u.idx)))?;
        for mut u in updates {
            let key = state_key(u.id, u.pc, u.idx);
            let ok = match stored.get(&key) {
                Some(s) => s.route == u.route,
                None => u.route == 0,
            };
            written.push(ok);
            if !ok {
                continue;
            }
            let was_dead = stored
                .get(&key)
                .is_some_and(|s| s.status == DeliveryStatus::Dead);
            if let Some(s) = stored.get(&key) {
                let mut events = s.events.clone();
                events.append(&mut u.state.events);
                u.state.events = events;
            }
            // The dead-letter index: what `redrive` sends again.
            match (was_dead, u.state.status == DeliveryStatus::Dead) {
                (false, true) => b.insert(&self.ks.dead, key, b"".as_slice()),
                (true, false) => b.remove(&self.ks.dead, key),
                _ => {}
            }
            b.insert(&self.ks.states, key, binary(&u.state));
        }
        b.commit()?;
        Ok(written)
    }

    /// Up to `limit` dead deliveries (message, step, address index), oldest trigger first,
    /// after `after`.
    pub fn dead(
        &self,
        after: Option<(MsgId, u16, u8)>,
        limit: usize,
    ) -> Result<Vec<(MsgId, u16, u8)>> {
        let iter = match after {
            Some((id, pc, idx)) => {
                let mut k = state_key(id, pc, idx).to_vec();
                k.push(0);
                self.ks.dead.range(k..)
            }
            None => self.ks.dead.iter(),
        };
        let mut out = Vec::new();
        for g in iter.take(limit) {
            let k = g.key()?;
            let (Some(id), Some(pc), Some(&idx)) = (
                MsgId::from_key(&k),
                k.get(12..14)
                    .and_then(|b| b.try_into().ok())
                    .map(u16::from_be_bytes),
                k.get(14),
            ) else {
                continue;
            };
            out.push((id, pc, idx));
        }
        Ok(out)
    }

    /// The stored states under `keys`: one range scan when they are close together (the
    /// deliveries of one send job are consecutive messages of one trigger), else one read
    /// each.
    fn states_of(
        &self,
        keys: impl Iterator<Item = [u8; 15]>,
    ) -> Result<HashMap<[u8; 15], DeliveryState>> {
        let mut keys: Vec<[u8; 15]> = keys.collect();
        keys.sort_unstable();
        let mut out = HashMap::new();
        let (Some(lo), Some(hi)) = (keys.first(), keys.last()) else {
            return Ok(out);
        };
        if dense(lo, hi, keys.len()) {
            let mut end = hi.to_vec();
            end.push(0);
            for g in self.ks.states.range(lo.to_vec()..end) {
                let (k, v) = g.into_inner()?;
                if let Ok(k) = <[u8; 15]>::try_from(k.as_ref()) {
                    if keys.binary_search(&k).is_ok() {
                        out.insert(k, decode(&v)?);
                    }
                }
            }
        } else {
            for k in keys {
                if let Some(v) = self.ks.states.get(k)? {
                    out.insert(k, decode(&v)?);
                }
            }
        }
        Ok(out)
    }

    /// The message `id`, its deliveries' states merged in.
    pub fn message(&self, id: MsgId) -> Result<Option<Message>> {
        Ok(self.messages(&[id])?.pop())
    }

    /// Several messages at once, by id (absent ones skipped); see [`Store::messages`].
    pub fn messages_by_id(&self, ids: &[MsgId]) -> Result<HashMap<MsgId, Message>> {
        Ok(self.messages(ids)?.into_iter().map(|m| (m.id, m)).collect())
    }

    /// Several messages at once, in id order (absent ones skipped), their deliveries' states
    /// merged in. Messages close together (a run's or a send's: consecutive numbers of one
    /// trigger) are read with one range scan of the records and one of the states.
    pub fn messages(&self, ids: &[MsgId]) -> Result<Vec<Message>> {
        Ok(self
            .read_messages(ids, true)?
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect())
    }

    /// What a send job reads: messages by id with their deliveries' states merged in, shared
    /// with the records kept in memory rather than copied (a message is copied only when a
    /// stored state changes one of its deliveries), and not settled: a send looks at its
    /// deliveries, never at the message's status.
    pub fn deliveries_by_id(&self, ids: &[MsgId]) -> Result<HashMap<MsgId, Arc<Message>>> {
        Ok(self
            .read_messages(ids, false)?
            .into_iter()
            .map(|m| (m.id, m))
            .collect())
    }

    fn read_messages(&self, ids: &[MsgId], settle: bool) -> Result<Vec<Arc<Message>>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let (Some(lo), Some(hi)) = (ids.first().copied(), ids.last().copied()) else {
            return Ok(Vec::new());
        };
        // Records this process wrote lately come from memory; the rest from disk.
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let recent = self.recent.lock();
            for id in &ids {
                match recent.map.get(id) {
                    Some(m) => out.push(m.clone()),
                    None => missing.push(*id),
                }
            }
        }
        if let (Some(mlo), Some(mhi)) = (missing.first().copied(), missing.last().copied()) {
            if dense(&mlo.key(), &mhi.key(), missing.len()) {
                let mut end = mhi.key().to_vec();
                end.push(0);
                for g in self.ks.messages.range(mlo.key().to_vec()..end) {
                    let (k, v) = g.into_inner()?;
                    if MsgId::from_key(&k).is_some_and(|id| missing.binary_search(&id).is_ok()) {
                        out.push(Arc::new(decode::<Message>(&v)?));
                    }
                }
            } else {
                for id in &missing {
                    if let Some(v) = self.ks.messages.get(id.key())? {
                        out.push(Arc::new(decode::<Message>(&v)?));
                    }
                }
            }
            out.sort_unstable_by_key(|m| m.id);
        }
        if dense(&lo.key(), &hi.key(), ids.len()) {
            let mut at = 0;
            for g in self.ks.states.range(lo.key().to_vec()..key_after(hi)) {
                let (k, v) = g.into_inner()?;
                let Some(id) = MsgId::from_key(&k) else {
                    continue;
                };
                while at < out.len() && out[at].id < id {
                    at += 1;
                }
                if at < out.len() && out[at].id == id {
                    overlay(Arc::make_mut(&mut out[at]), &k, &v)?;
                }
            }
        } else {
            for m in out.iter_mut().filter(|m| !m.deliveries.is_empty()) {
                for g in self.ks.states.prefix(m.id.key()) {
                    let (k, v) = g.into_inner()?;
                    overlay(Arc::make_mut(m), &k, &v)?;
                }
            }
        }
        if settle {
            for m in &mut out {
                if m.run_ended() {
                    Arc::make_mut(m).settle();
                }
            }
        }
        Ok(out)
    }

    /// Forgets the records kept in memory (tests compare reads from disk with them).
    #[cfg(test)]
    fn forget_recent(&self) {
        let mut r = self.recent.lock();
        r.map.clear();
        r.order.clear();
    }

    fn overlay_states(&self, m: &mut Message) -> Result<()> {
        if m.deliveries.is_empty() {
            return Ok(());
        }
        for g in self.ks.states.prefix(m.id.key()) {
            let (k, v) = g.into_inner()?;
            overlay(m, &k, &v)?;
        }
        Ok(())
    }

    /// A message's activity trail, oldest first: its run's events, its deliveries' provider
    /// events (and events of stores written before those were split out).
    pub fn activity(&self, id: MsgId) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        if let Some(v) = self.ks.messages.get(id.key())? {
            let m: Message = decode(&v)?;
            if m.trail.first().is_none_or(|e| e.kind != "triggered") {
                // Not stored: the record says all of it.
                out.push(Event::new(
                    m.created_ms,
                    None,
                    "triggered",
                    format!("trigger {} for subscriber {}", id.trigger, m.subscriber),
                ));
            }
            out.extend(m.trail);
        }
        for g in self.ks.states.prefix(id.key()) {
            let (_, v) = g.into_inner()?;
            let s: DeliveryState = decode(&v)?;
            out.extend(s.events);
        }
        for g in self.ks.activity.prefix(id.key()) {
            let (_, v) = g.into_inner()?;
            out.push(decode(&v)?);
        }
        out.sort_by_key(|e| e.at_ms);
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
        let mut take = |mut m: Message, items: &mut Vec<Message>| {
            last = Some(m.id);
            // The feed lists messages; their trails are GET /v1/messages/{id}'s.
            m.trail = Vec::new();
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
                let mut m: Message = decode(&v)?;
                self.overlay_states(&mut m)?;
                if m.run_ended() {
                    m.settle();
                }
                take(m, &mut items);
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
        self.count_n(now_ms, workflow, channel, provider, outcome, 1);
    }

    /// Counts `n` alike at once (a send job's deliveries, tallied first).
    pub fn count_n(
        &self,
        now_ms: u64,
        workflow: &str,
        channel: &str,
        provider: &str,
        outcome: &str,
        n: u64,
    ) {
        let k = StatKey {
            day: (now_ms / 86_400_000) as u32,
            workflow: workflow.to_string(),
            channel: channel.to_string(),
            provider: provider.to_string(),
            outcome: outcome.to_string(),
        };
        *self.stats.lock().entry(k).or_default() += n;
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
                let mut m: Message = decode(&v)?;
                self.overlay_states(&mut m)?;
                if m.run_ended() {
                    m.settle();
                }
                chunk.push(m);
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
                    let mut line = serde_json::json!({"message": m, "activity": activity});
                    if let Some(o) = line["message"].as_object_mut() {
                        o.remove("trail");
                    }
                    serde_json::to_writer(&mut gz, &line)?;
                    gz.write_all(
                        b"
",
                    )
                    .map_err(|e| StoreError(e.to_string()))?;
                    b.remove(&self.ks.messages, m.id.key());
                    self.recent.lock().map.remove(&m.id);
                    for g in self.ks.activity.prefix(m.id.key()) {
                        b.remove(&self.ks.activity, g.key()?.to_vec());
                    }
                    for g in self.ks.states.prefix(m.id.key()) {
                        b.remove(&self.ks.states, g.key()?.to_vec());
                    }
                    for g in self.ks.dead.prefix(m.id.key()) {
                        b.remove(&self.ks.dead, g.key()?.to_vec());
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
                for g in self.ks.runs.prefix(t.to_be_bytes()) {
                    b.remove(&self.ks.runs, g.key()?.to_vec());
                }
            }
            b.commit()?;
            self.persist()?;
        }
        let cutoff = now_ms.saturating_sub(idempotency_ms);
        let mut b = self.db.batch();
        for g in self.ks.idem.iter() {
            let (k, v) = g.into_inner()?;
            let rec: Idempotency = decode(&v)?;
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
            status: Status::Sending,
            created_ms: created,
            updated_ms: created,
            pc: 1,
            wait: None,
            deliveries: vec![email(0)],
            trail: vec![Event::new(created, None, "triggered", "x")],
        };
        let old = msg(10 * day * 1024, 10 * day);
        let new = msg(200 * day * 1024, 200 * day);
        for m in [&old, &new] {
            let mark = RunMark::Created {
                trigger: m.id.trigger,
                first: 0,
            };
            assert!(s.write_run(mark, vec![m.clone()], &[m.id]).expect("write"));
        }
        let sent = sent_by(&old, "a", 10 * day + 5);
        assert_eq!(s.write_states(vec![sent]).expect("state"), [true]);
        let arch = dir.path().join("archive");
        let r = s
            .archive(100 * day, day, 200 * day, &arch)
            .expect("archive");
        assert_eq!((r.messages, r.events, r.files.len()), (1, 2, 1));
        assert!(s.message(old.id).expect("read").is_none(), "deleted");
        assert!(s.activity(old.id).expect("read").is_empty());
        assert!(
            s.ks.states.prefix(old.id.key()).next().is_none(),
            "its delivery states went with it"
        );
        assert!(
            !s.marked(RunMark::Created {
                trigger: old.id.trigger,
                first: 0
            })
            .expect("read"),
            "and its run marks"
        );
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
        assert_eq!(seen[0]["activity"][1]["kind"], "sent");
        assert_eq!(seen[0]["message"]["status"], "sent", "archived as it ended");
        assert!(seen[0]["message"].get("trail").is_none());
        assert_eq!(
            r.files[0].file_name().and_then(|f| f.to_str()),
            Some("1970-01-11.ndjson.gz")
        );
    }

    fn email(pc: u16) -> Delivery {
        Delivery {
            pc,
            channel: Channel::Email,
            to: "u@example.com".into(),
            status: DeliveryStatus::Queued,
            provider: Some("a".into()),
            attempts: 0,
            provider_id: None,
            idx: 0,
            route: 0,
            content: Arc::default(),
        }
    }

    fn message(trigger: u64, n: u32) -> Message {
        Message {
            id: MsgId { trigger, n },
            workflow: "w".into(),
            subscriber: format!("u{n:03}"),
            class: Class::Bulk,
            status: Status::Sending,
            created_ms: 1,
            updated_ms: 1,
            pc: 1,
            wait: None,
            deliveries: vec![email(0)],
            trail: vec![Event::new(1, None, "triggered", "t")],
        }
    }

    fn sent_by(m: &Message, provider: &str, at: u64) -> StateUpdate {
        StateUpdate {
            id: m.id,
            pc: 0,
            idx: 0,
            route: 0,
            state: DeliveryState {
                status: DeliveryStatus::Sent,
                provider: Some(provider.into()),
                attempts: 1,
                provider_id: None,
                route: 0,
                events: vec![Event::new(at, Some(0), "sent", "accepted")],
            },
        }
    }

    #[test]
    fn of_two_attempts_of_one_run_only_the_first_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let mark = RunMark::Ran {
            trigger: 7,
            pc: 0,
            first: 0,
            digest: false,
        };
        let first = message(7, 0);
        assert!(!s.marked(mark).expect("read"));
        assert!(s
            .write_run(mark, vec![first.clone()], &[first.id])
            .expect("write"));
        let mut late = first.clone();
        late.status = Status::Delayed;
        late.pc = 0;
        assert!(
            !s.write_run(mark, vec![late], &[first.id]).expect("write"),
            "the second attempt is refused"
        );
        assert!(s.marked(mark).expect("read"));
        let stored = s.message(first.id).expect("read").expect("there");
        assert_eq!((stored.pc, stored.status), (1, Status::Sending));
    }

    #[test]
    fn a_stale_send_attempt_does_not_overwrite_a_delivery_moved_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let m = message(9, 0);
        let mark = RunMark::Created {
            trigger: 9,
            first: 0,
        };
        s.write_run(mark, vec![m.clone()], &[m.id]).expect("write");
        // One attempt fails the delivery over to provider b (route 1)...
        let moved = StateUpdate {
            id: m.id,
            pc: 0,
            idx: 0,
            route: 0,
            state: DeliveryState {
                status: DeliveryStatus::Queued,
                provider: Some("b".into()),
                attempts: 1,
                provider_id: None,
                route: 1,
                events: vec![Event::new(2, Some(0), "failover", "a to b")],
            },
        };
        assert_eq!(s.write_states(vec![moved]).expect("write"), [true]);
        // ...an overlapping attempt that read route 0 is refused...
        assert_eq!(
            s.write_states(vec![sent_by(&m, "a", 3)]).expect("write"),
            [false]
        );
        let now = s.message(m.id).expect("read").expect("there");
        assert_eq!(now.deliveries[0].provider.as_deref(), Some("b"));
        assert_eq!(now.status, Status::Sending);
        // ...and the job on route 1 completes it, its events after the failover's.
        let mut done = sent_by(&m, "b", 4);
        done.route = 1;
        done.state.route = 1;
        assert_eq!(s.write_states(vec![done]).expect("write"), [true]);
        let now = s.message(m.id).expect("read").expect("there");
        assert_eq!(now.status, Status::Sent);
        let kinds: Vec<std::borrow::Cow<str>> = s
            .activity(m.id)
            .expect("read")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["triggered", "failover", "sent"]);
    }

    #[test]
    fn messages_read_by_range_match_messages_read_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let msgs: Vec<Message> = (0..40).map(|n| message(5, n)).collect();
        let ids: Vec<MsgId> = msgs.iter().map(|m| m.id).collect();
        let mark = RunMark::Created {
            trigger: 5,
            first: 0,
        };
        s.write_run(mark, msgs.clone(), &ids).expect("write");
        // Other triggers' messages on both sides, and every third one sent.
        for t in [4, 6] {
            let o = message(t, 0);
            let mark = RunMark::Created {
                trigger: t,
                first: 0,
            };
            s.write_run(mark, vec![o.clone()], &[o.id]).expect("write");
            s.write_states(vec![sent_by(&o, "a", 2)]).expect("write");
        }
        let sent: Vec<StateUpdate> = msgs.iter().step_by(3).map(|m| sent_by(m, "a", 2)).collect();
        s.write_states(sent).expect("write");
        let wanted: Vec<MsgId> = ids.iter().copied().filter(|id| id.n % 2 == 0).collect();
        // From memory (this process wrote them), from disk by range, from disk one by one,
        // and half from each: the same messages with the same states.
        let from_memory = s.messages(&wanted).expect("read");
        s.forget_recent();
        let together = s.messages(&wanted).expect("read");
        let one_by_one: Vec<Message> = wanted
            .iter()
            .map(|id| s.message(*id).expect("read").expect("there"))
            .collect();
        assert_eq!(together.len(), 20);
        assert_eq!(together, one_by_one);
        assert_eq!(from_memory, together);
        let half: Vec<Message> = msgs.iter().filter(|m| m.id.n % 4 == 0).cloned().collect();
        let mark = RunMark::Created {
            trigger: 5,
            first: 1_000,
        };
        s.write_run(mark, half, &[]).expect("write");
        assert_eq!(s.messages(&wanted).expect("read"), together);
        let statuses: Vec<Status> = together.iter().map(|m| m.status).collect();
        let expected: Vec<Status> = wanted
            .iter()
            .map(|id| {
                if id.n % 3 == 0 {
                    Status::Sent
                } else {
                    Status::Sending
                }
            })
            .collect();
        assert_eq!(statuses, expected);
    }

    #[test]
    fn subscribers_read_together_match_those_read_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let subs: Vec<Subscriber> = (0..500)
            .map(|i| Subscriber {
                id: format!("u{i:04}"),
                ..Default::default()
            })
            .collect();
        s.put_subscribers(&subs).expect("write");
        // Dense (a page of a topic), sparse (far apart: the scan gives up), and unknown ids.
        let dense: Vec<String> = (100..150).map(|i| format!("u{i:04}")).collect();
        let sparse: Vec<String> = (0..20).map(|i| format!("u{:04}", i * 25)).collect();
        let unknown: Vec<String> = (0..10).map(|i| format!("u{i:04}x")).collect();
        for ids in [dense, sparse, unknown] {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let got = s.subscribers_by_id(&refs).expect("read");
            for id in &ids {
                assert_eq!(
                    got.get(id).map(|x| x.id.clone()),
                    s.subscriber(id).expect("read").map(|x| x.id),
                    "{id}"
                );
            }
        }
    }

    #[test]
    fn records_an_older_version_wrote_as_json_read_beside_binary_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        // As the first versions wrote them: JSON messages, states, subscribers, preferences.
        let old = message(3, 0);
        s.ks.messages
            .insert(old.id.key(), json(&old))
            .expect("write");
        let sent = sent_by(&old, "a", 9);
        s.ks.states
            .insert(state_key(old.id, 0, 0), json(&sent.state))
            .expect("write");
        let mut data = serde_json::Map::new();
        data.insert("name".into(), "Old".into());
        let old_sub = Subscriber {
            id: "old".into(),
            email: Some("old@example.com".into()),
            data,
            ..Default::default()
        };
        s.ks.subscribers
            .insert("old".as_bytes(), json(&old_sub))
            .expect("write");
        // Written now: binary.
        let new = message(3, 1);
        let mark = RunMark::Created {
            trigger: 3,
            first: 1,
        };
        s.write_run(mark, vec![new.clone()], &[new.id])
            .expect("write");
        let new_sub = Subscriber {
            id: "new".into(),
            locale: Some("fr".into()),
            ..Default::default()
        };
        s.put_subscribers(std::slice::from_ref(&new_sub))
            .expect("write");
        let stored =
            s.ks.messages
                .get(new.id.key())
                .expect("read")
                .expect("there");
        assert_eq!(stored.first(), Some(&BINARY), "new records are binary");
        s.forget_recent();
        let both = s.messages(&[old.id, new.id]).expect("read");
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].status, Status::Sent, "the JSON state is merged in");
        assert_eq!(both[0].deliveries[0].provider.as_deref(), Some("a"));
        assert_eq!(both[1], new);
        let subs = s.subscribers_by_id(&["old", "new"]).expect("read");
        assert_eq!(subs.get("old").map(|s| &**s), Some(&old_sub));
        assert_eq!(subs.get("new").map(|s| &**s), Some(&new_sub));
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.message(new.id).expect("read"), Some(new));
        assert!(s.ks.messages.get(old.id.key()).expect("read").is_some());
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
