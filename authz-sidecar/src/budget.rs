//! Blast-radius counters: how much a subject (an agent, a delegation chain) has done lately.
//!
//! The policy engine limits the blast radius of an agent by counting, per subject and over
//! sliding windows (e.g. one minute, one hour), four kinds of consumption ([`CounterKind`]):
//! tool calls, destructive calls, bytes, and *distinct* resources touched (resource URIs, tool and
//! target names). The decision path asks [`BudgetStore::usage`] before a call and records it with
//! [`BudgetStore::consume`] once it is allowed. A subject is an opaque string the caller builds
//! (`agent:demo-agent`, `chain:orchestrator>helper-1`).
//!
//! # Sliding windows and their accuracy
//!
//! A window of length `W` is split into `N` sub-buckets (`buckets`, [`DEFAULT_BUCKETS`] = 6) of
//! width `w = ceil(W / N)`, aligned on the Unix epoch: bucket `b` covers `[b·w, (b+1)·w)`. The
//! usage at time `now` is the sum (for `resources`, the distinct union) over the buckets whose
//! *start* lies in `(now - W, now]`. So consumption is counted for at least `W - w` and at most
//! `W` after it happened: a limit can be exceeded by what was consumed in one bucket width just
//! before the window's start, never more (with `W` = 60 s and `N` = 6, a 10 s granularity). Raise
//! `buckets` for a finer granularity (at most [`MAX_BUCKETS`]): each usage query reads `N` buckets.
//!
//! # Backends
//!
//! - **memory** (default): per sidecar, exact. Counters live in a sharded map keyed by subject,
//!   each (subject, kind, window) a ring of `N` buckets. A series whose newest bucket left its
//!   window is dropped by a lazy sweep (at most every [`SWEEP_INTERVAL_MS`] of a shard's
//!   activity), so memory stays bounded by the subjects active within their windows. Distinct
//!   resources are kept as 128-bit digests, at most `max_distinct` per series
//!   ([`DEFAULT_MAX_DISTINCT`]); past the cap each touch of a resource the series could not track
//!   counts one more, repeats included, so a capped usage is an *upper bound* (a limit trips
//!   early, never late).
//! - **redis**: fleet-wide, shared by every sidecar configured with the same `prefix` (and the
//!   same `buckets`; sidecars with different bucket widths write different keys and do not see
//!   each other). A count bucket is an `INCRBY` key, a distinct bucket a HyperLogLog (`PFADD`);
//!   usage is `MGET` of the window's bucket keys summed, or `PFCOUNT` over them (the cardinality
//!   of their union, with HyperLogLog's standard error of 0.81%, so a `resources` limit may trip
//!   up to about 1-2% early or late). Each key expires `W + w` after its last write. One
//!   pipelined round trip per [`BudgetStore::usage`] and per [`BudgetStore::consume`] call,
//!   bounded by `response_timeout_ms`. The bucket is chosen by the sidecar's clock: sidecars
//!   whose clocks differ by less than a bucket width shift a consumption by at most one bucket.
//!   Keys are `<prefix>{<digest of the subject>}:<kind>:<window ms>:<bucket start ms>`: the
//!   subject is hashed (SHA-256, 128 bits), never spliced into a key name, and the hash tag keeps
//!   a subject's keys in one Redis Cluster slot so multi-key `MGET` / `PFCOUNT` stay valid.
//!   A subject's decision turn ([`BudgetStore::take_turn`]) is the key `<prefix>turn:<digest>`.
//!
//! Errors (Redis unreachable, a timeout, a bad reply) are a [`BudgetError`], never a panic; the
//! caller decides whether a call proceeds without its budget (the decision path fails closed).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Default `buckets`: sub-buckets per window (a 60 s window is counted in 10 s steps).
pub const DEFAULT_BUCKETS: u32 = 6;
/// Largest `buckets`: a usage query reads this many buckets per window.
pub const MAX_BUCKETS: u32 = 100;
/// Default `max_distinct`: distinct resources tracked per (subject, window) in memory.
pub const DEFAULT_MAX_DISTINCT: usize = 100_000;
/// Default `prefix` of the Redis keys.
pub const DEFAULT_REDIS_PREFIX: &str = "behavry:budget:";
/// Default `connect_timeout_ms`: the longest the first connection to Redis may take, retries
/// included; a sidecar whose Redis is unreachable fails to start within this bound.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default `response_timeout_ms`: the longest one usage or consume round trip to Redis may take
/// (reconnection included) before it fails with [`BudgetError::Timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 250;
/// Longest window: 31 days.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);
/// How often (in `now` time) a memory shard drops the series that left their window.
pub const SWEEP_INTERVAL_MS: u64 = 5_000;
/// Shards of the memory backend: a lock per shard, so concurrent decisions rarely wait.
const MEMORY_SHARDS: usize = 16;

/// Why a budget could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// `buckets` is out of range.
    #[error("`buckets` must be between 1 and {MAX_BUCKETS}, got {0}")]
    InvalidBuckets(u32),
    /// `max_distinct` is zero.
    #[error("`max_distinct` must be at least 1")]
    InvalidMaxDistinct,
    /// A timeout in the config is zero.
    #[error("`{0}` must be at least 1")]
    InvalidTimeout(&'static str),
    /// A window shorter than a millisecond or longer than [`MAX_WINDOW`].
    #[error("a budget window must be between 1 ms and {max} s, got {0:?}", max = MAX_WINDOW.as_secs())]
    InvalidWindow(Duration),
    /// A consumption that does not fit its counter: `Touch` is for `resources`, `Add` for the rest.
    #[error("counter `{kind}` does not take {consumption} (`resources` takes Touch, others Add)")]
    ConsumptionMismatch {
        /// The counter.
        kind: CounterKind,
        /// `Add` or `Touch`.
        consumption: &'static str,
    },
    /// An amount Redis cannot add (INCRBY takes a signed 64-bit integer).
    #[error("amount {0} is too large for a budget counter (at most {max})", max = i64::MAX)]
    AmountTooLarge(u64),
    /// The clock is before the Unix epoch.
    #[error("the clock is before the Unix epoch")]
    ClockBeforeEpoch,
    /// The Redis URL does not parse (the URL itself is not repeated: it may hold a password).
    #[error("invalid Redis `url`: {0}")]
    RedisUrl(#[source] redis::RedisError),
    /// The first connection to Redis failed.
    #[error("cannot connect to Redis at {address}: {source}")]
    RedisConnect {
        /// Host and port (never the password).
        address: String,
        /// The connection error.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis command failed (connection lost, server error).
    #[error("Redis budget command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the configured bound.
    #[error("Redis did not answer within {} ms ({what})", .limit.as_millis())]
    Timeout {
        /// `connect` or the operation.
        what: &'static str,
        /// The bound.
        limit: Duration,
    },
    /// Redis answered something other than the expected counts.
    #[error("unexpected Redis reply: {0}")]
    UnexpectedReply(String),
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterKind {
    /// Tool calls ([`Consumption::Add`], usually 1).
    Calls,
    /// Destructive calls (writes, deletes; [`Consumption::Add`]).
    Destructive,
    /// Bytes (sum of [`Consumption::Add`] amounts).
    Bytes,
    /// Distinct resources touched ([`Consumption::Touch`]).
    Resources,
}

impl CounterKind {
    /// The name used in config, policy input and Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Destructive => "destructive",
            Self::Bytes => "bytes",
            Self::Resources => "resources",
        }
    }

    /// Whether the counter counts distinct strings rather than adding amounts.
    pub fn is_distinct(self) -> bool {
        matches!(self, Self::Resources)
    }
}

impl fmt::Display for CounterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The length of a sliding window: whole milliseconds, from 1 ms to [`MAX_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    millis: u64,
}

impl Window {
    /// A window of `length` (sub-millisecond parts are dropped).
    pub fn new(length: Duration) -> Result<Self, BudgetError> {
        let millis = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 || length > MAX_WINDOW {
            return Err(BudgetError::InvalidWindow(length));
        }
        Ok(Self { millis })
    }

    /// A window of `secs` seconds.
    pub fn from_secs(secs: u64) -> Result<Self, BudgetError> {
        Self::new(Duration::from_secs(secs))
    }

    /// The window's length.
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.millis)
    }

    /// The window's length in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.millis
    }
}

/// One counter: a subject's counter of one kind over one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// Who consumed: an opaque string built by the caller (`agent:<id>`, `chain:<a>><b>`).
    pub subject: String,
    /// What is counted.
    pub kind: CounterKind,
    /// Over how long.
    pub window: Window,
}

impl CounterKey {
    /// The counter of `kind` over `window` for `subject`.
    pub fn new(subject: impl Into<String>, kind: CounterKind, window: Window) -> Self {
        Self {
            subject: subject.into(),
            kind,
            window,
        }
    }
}

/// What one call consumes of a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumption {
    /// Add an amount (`calls`, `destructive`, `bytes`).
    Add(u64),
    /// Touch a resource (`resources`): counted once per window however often it is touched.
    Touch(String),
}

impl Consumption {
    fn name(&self) -> &'static str {
        match self {
            Self::Add(_) => "Add",
            Self::Touch(_) => "Touch",
        }
    }
}

/// A consumption to record on one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterUpdate {
    /// The counter.
    pub key: CounterKey,
    /// What is consumed.
    pub consumption: Consumption,
}

impl CounterUpdate {
    /// Record `consumption` on `key`.
    pub fn new(key: CounterKey, consumption: Consumption) -> Self {
        Self { key, consumption }
    }

    fn check(&self) -> Result<(), BudgetError> {
        match (&self.consumption, self.key.kind.is_distinct()) {
            (Consumption::Add(_), false) | (Consumption::Touch(_), true) => Ok(()),
            _ => Err(BudgetError::ConsumptionMismatch {
                kind: self.key.kind,
                consumption: self.consumption.name(),
            }),
        }
    }
}

/// Where the counters live, as written in the sidecar's TOML config
/// (`backend = "memory"` or `backend = "redis"`). Default: memory with default settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum BudgetBackendConfig {
    /// Per-sidecar counters in memory.
    Memory {
        /// Sub-buckets per window (default [`DEFAULT_BUCKETS`], 1 to [`MAX_BUCKETS`]).
        #[serde(default = "default_buckets")]
        buckets: u32,
        /// Distinct resources tracked per series (default [`DEFAULT_MAX_DISTINCT`]).
        #[serde(default = "default_max_distinct")]
        max_distinct: usize,
    },
    /// Fleet-wide counters in Redis.
    Redis {
        /// `redis://[:password@]host[:port][/db]`.
        url: String,
        /// Key prefix (default [`DEFAULT_REDIS_PREFIX`]); sidecars sharing it share counters.
        #[serde(default = "default_prefix")]
        prefix: String,
        /// Sub-buckets per window (default [`DEFAULT_BUCKETS`]); the same on every sidecar.
        #[serde(default = "default_buckets")]
        buckets: u32,
        /// Bound of the first connection (default [`DEFAULT_CONNECT_TIMEOUT_MS`]).
        #[serde(default = "default_connect_timeout_ms")]
        connect_timeout_ms: u64,
        /// Bound of each round trip (default [`DEFAULT_RESPONSE_TIMEOUT_MS`]).
        #[serde(default = "default_response_timeout_ms")]
        response_timeout_ms: u64,
    },
}

fn default_buckets() -> u32 {
    DEFAULT_BUCKETS
}
fn default_max_distinct() -> usize {
    DEFAULT_MAX_DISTINCT
}
fn default_prefix() -> String {
    DEFAULT_REDIS_PREFIX.to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_response_timeout_ms() -> u64 {
    DEFAULT_RESPONSE_TIMEOUT_MS
}

impl Default for BudgetBackendConfig {
    fn default() -> Self {
        Self::Memory {
            buckets: DEFAULT_BUCKETS,
            max_distinct: DEFAULT_MAX_DISTINCT,
        }
    }
}

// The URL may carry a password: Debug shows it as `***`.
impl fmt::Debug for BudgetBackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory {
                buckets,
                max_distinct,
            } => f
                .debug_struct("Memory")
                .field("buckets", buckets)
                .field("max_distinct", max_distinct)
                .finish(),
            Self::Redis {
                url,
                prefix,
                buckets,
                connect_timeout_ms,
                response_timeout_ms,
            } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .field("prefix", prefix)
                .field("buckets", buckets)
                .field("connect_timeout_ms", connect_timeout_ms)
                .field("response_timeout_ms", response_timeout_ms)
                .finish(),
        }
    }
}

/// `url` with its user information (`user:password@`) replaced by `***@`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest.get(..authority_end).and_then(|a| a.rfind('@')) {
        Some(at) => format!("{scheme}://***{}", rest.get(at..).unwrap_or_default()),
        None => url.to_owned(),
    }
}

impl BudgetBackendConfig {
    /// Check the fields without connecting anywhere (run at config load).
    pub fn validate(&self) -> Result<(), BudgetError> {
        match self {
            Self::Memory {
                buckets,
                max_distinct,
            } => {
                check_buckets(*buckets)?;
                if *max_distinct == 0 {
                    return Err(BudgetError::InvalidMaxDistinct);
                }
            }
            Self::Redis {
                url,
                buckets,
                connect_timeout_ms,
                response_timeout_ms,
                ..
            } => {
                check_buckets(*buckets)?;
                if *connect_timeout_ms == 0 {
                    return Err(BudgetError::InvalidTimeout("connect_timeout_ms"));
                }
                if *response_timeout_ms == 0 {
                    return Err(BudgetError::InvalidTimeout("response_timeout_ms"));
                }
                redis::Client::open(url.as_str()).map_err(BudgetError::RedisUrl)?;
            }
        }
        Ok(())
    }

    /// Open the configured store (for Redis: connect, within `connect_timeout_ms`).
    pub async fn open(&self) -> Result<BudgetStore, BudgetError> {
        self.validate()?;
        match self {
            Self::Memory {
                buckets,
                max_distinct,
            } => BudgetStore::memory_with_max_distinct(*buckets, *max_distinct),
            Self::Redis {
                url,
                prefix,
                buckets,
                connect_timeout_ms,
                response_timeout_ms,
            } => {
                let counters = RedisCounters::connect(
                    url,
                    prefix,
                    *buckets,
                    Duration::from_millis(*connect_timeout_ms),
                    Duration::from_millis(*response_timeout_ms),
                )
                .await?;
                Ok(BudgetStore {
                    backend: Backend::Redis(counters),
                })
            }
        }
    }
}

fn check_buckets(buckets: u32) -> Result<(), BudgetError> {
    if (1..=MAX_BUCKETS).contains(&buckets) {
        Ok(())
    } else {
        Err(BudgetError::InvalidBuckets(buckets))
    }
}

/// The blast-radius counters, in memory or in Redis. Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct BudgetStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<MemoryCounters>),
    Redis(RedisCounters),
}

impl fmt::Debug for BudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Memory(memory) => f
                .debug_struct("BudgetStore::Memory")
                .field("buckets", &memory.buckets)
                .field("max_distinct", &memory.max_distinct)
                .finish_non_exhaustive(),
            Backend::Redis(redis) => f
                .debug_struct("BudgetStore::Redis")
                .field("prefix", &redis.prefix)
                .field("buckets", &redis.buckets)
                .field("response_timeout", &redis.response_timeout)
                .finish_non_exhaustive(),
        }
    }
}

impl BudgetStore {
    /// Counters in this process's memory, `buckets` sub-buckets per window (1 to
    /// [`MAX_BUCKETS`]), at most [`DEFAULT_MAX_DISTINCT`] distinct resources per series.
    pub fn memory(buckets: u32) -> Result<Self, BudgetError> {
        Self::memory_with_max_distinct(buckets, DEFAULT_MAX_DISTINCT)
    }

    /// Counters in memory tracking at most `max_distinct` distinct resources per series.
    pub fn memory_with_max_distinct(
        buckets: u32,
        max_distinct: usize,
    ) -> Result<Self, BudgetError> {
        check_buckets(buckets)?;
        if max_distinct == 0 {
            return Err(BudgetError::InvalidMaxDistinct);
        }
        Ok(Self {
            backend: Backend::Memory(Arc::new(MemoryCounters::new(buckets, max_distinct))),
        })
    }

    /// Counters in Redis at `url` under `prefix`, with the default timeouts
    /// ([`DEFAULT_CONNECT_TIMEOUT_MS`], [`DEFAULT_RESPONSE_TIMEOUT_MS`]). Connects now.
    pub async fn redis(url: &str, prefix: &str, buckets: u32) -> Result<Self, BudgetError> {
        BudgetBackendConfig::Redis {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            buckets,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT_MS,
        }
        .open()
        .await
    }

    /// `"memory"` or `"redis"`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Sub-buckets per window.
    pub fn buckets(&self) -> u32 {
        match &self.backend {
            Backend::Memory(memory) => memory.buckets,
            Backend::Redis(redis) => redis.buckets,
        }
    }

    /// Current usage of each counter in `keys`, in order (one Redis round trip). A counter never
    /// consumed reads 0.
    pub async fn usage(
        &self,
        keys: &[CounterKey],
        now: SystemTime,
    ) -> Result<Vec<u64>, BudgetError> {
        let now_ms = unix_millis(now)?;
        match &self.backend {
            Backend::Memory(memory) => {
                Ok(keys.iter().map(|key| memory.usage(key, now_ms)).collect())
            }
            Backend::Redis(redis) => redis.usage(keys, now_ms).await,
        }
    }

    /// Record every update (one Redis round trip). Every update is checked first: a
    /// [`BudgetError::ConsumptionMismatch`] records nothing.
    pub async fn consume(
        &self,
        updates: &[CounterUpdate],
        now: SystemTime,
    ) -> Result<(), BudgetError> {
        let now_ms = unix_millis(now)?;
        for update in updates {
            update.check()?;
        }
        match &self.backend {
            Backend::Memory(memory) => {
                memory.consume(updates, now_ms);
                Ok(())
            }
            Backend::Redis(redis) => redis.consume(updates, now_ms).await,
        }
    }
}

impl BudgetStore {
    /// Give back `amount` of what was added to each counter of `keys` at `reserved_at` (the
    /// unused part of a reservation, docs/policy.md "Leases"): taken from the bucket `reserved_at`
    /// fell in, never below zero. A bucket that has left its window is not touched (what it held
    /// no longer counts). `resources` counters are skipped: a touch is not given back.
    pub async fn release(
        &self,
        keys: &[CounterKey],
        amount: u64,
        reserved_at: SystemTime,
        now: SystemTime,
    ) -> Result<(), BudgetError> {
        let at_ms = unix_millis(reserved_at)?;
        let now_ms = unix_millis(now)?;
        let keys: Vec<&CounterKey> = keys.iter().filter(|k| !k.kind.is_distinct()).collect();
        if amount == 0 || keys.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(memory) => {
                for key in keys {
                    memory.release(key, amount, at_ms, now_ms);
                }
                Ok(())
            }
            Backend::Redis(redis) => redis.release(&keys, amount, at_ms, now_ms).await,
        }
    }
}

/// The bucket (index) `at_ms` falls in, if its start is still within the window at `now_ms`.
fn bucket_in_window(window_ms: u64, width_ms: u64, at_ms: u64, now_ms: u64) -> Option<u64> {
    let bucket = at_ms / width_ms;
    let (first, last) = bucket_range(window_ms, width_ms, now_ms);
    (first..=last).contains(&bucket).then_some(bucket)
}

fn unix_millis(now: SystemTime) -> Result<u64, BudgetError> {
    let elapsed = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| BudgetError::ClockBeforeEpoch)?;
    Ok(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Bucket width of `window` split into `buckets`: `ceil(window / buckets)`, at least 1 ms.
fn bucket_width(window: Window, buckets: u32) -> u64 {
    window.millis.div_ceil(u64::from(buckets.max(1))).max(1)
}

/// The buckets (indexes, inclusive) whose start lies in `(now - window, now]`. There are at most
/// `buckets` of them since `width * buckets >= window`.
fn bucket_range(window_ms: u64, width_ms: u64, now_ms: u64) -> (u64, u64) {
    let last = now_ms / width_ms;
    let first = now_ms
        .checked_sub(window_ms)
        .map_or(0, |oldest| oldest / width_ms + 1);
    (first, last)
}

/// A resource as counted: the first 128 bits of its SHA-256, so a tracked resource costs the
/// same memory (and Redis request bytes) whatever the length of its name.
fn resource_digest(resource: &str) -> [u8; 16] {
    let digest = Sha256::digest(resource.as_bytes());
    digest.first_chunk::<16>().copied().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Memory backend

struct MemoryCounters {
    buckets: u32,
    max_distinct: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    /// Series by subject; a subject has one per (kind, window) it was consumed on.
    subjects: HashMap<String, Vec<Series>>,
    next_sweep_ms: u64,
}

struct Series {
    kind: CounterKind,
    window_ms: u64,
    width_ms: u64,
    /// The newest bucket written. Time that goes backwards (a stepped clock) writes here, so a
    /// consumption is never lost or counted for less than its window.
    newest: u64,
    body: SeriesBody,
}

enum SeriesBody {
    Count(Vec<CountSlot>),
    Distinct(DistinctSeries),
}

#[derive(Clone, Copy, Default)]
struct CountSlot {
    bucket: Option<u64>,
    value: u64,
}

/// Distinct resources of one series: each tracked resource lives in the slot of the bucket it was
/// last touched in, so the window's distinct count is the sum of the slots' sizes (O(buckets))
/// and a resource touched in several buckets is counted once.
struct DistinctSeries {
    last_touched: HashMap<[u8; 16], u64>,
    slots: Vec<DistinctSlot>,
}

#[derive(Default)]
struct DistinctSlot {
    bucket: Option<u64>,
    resources: HashSet<[u8; 16]>,
    /// Touches of resources not tracked because the series was at `max_distinct`.
    untracked: u64,
}

impl MemoryCounters {
    fn new(buckets: u32, max_distinct: usize) -> Self {
        Self {
            buckets,
            max_distinct,
            hasher: RandomState::new(),
            shards: (0..MEMORY_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        }
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo the length, which is MEMORY_SHARDS > 0"
    )]
    fn shard(&self, subject: &str) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(subject);
        let index = usize::try_from(hash % MEMORY_SHARDS as u64).unwrap_or_default();
        &self.shards[index % self.shards.len()]
    }

    fn usage(&self, key: &CounterKey, now_ms: u64) -> u64 {
        // A poisoned lock only means another decision panicked mid-update; the counters are
        // plain numbers and sets, still usable.
        let shard = self
            .shard(&key.subject)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .subjects
            .get(&key.subject)
            .and_then(|series| {
                series
                    .iter()
                    .find(|s| s.kind == key.kind && s.window_ms == key.window.millis)
            })
            .map_or(0, |series| series.usage(now_ms))
    }

    fn consume(&self, updates: &[CounterUpdate], now_ms: u64) {
        for update in updates {
            let key = &update.key;
            let mut shard = self
                .shard(&key.subject)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Look up by `&str` first: the subject is copied only for a new entry.
            if !shard.subjects.contains_key(key.subject.as_str()) {
                shard.subjects.insert(key.subject.clone(), Vec::new());
            }
            let Some(subject_series) = shard.subjects.get_mut(key.subject.as_str()) else {
                continue;
            };
            let position = subject_series
                .iter()
                .position(|s| s.kind == key.kind && s.window_ms == key.window.millis);
            let index = position.unwrap_or_else(|| {
                subject_series.push(Series::new(key.kind, key.window, self.buckets));
                subject_series.len().saturating_sub(1)
            });
            if let Some(series) = subject_series.get_mut(index) {
                series.consume(&update.consumption, now_ms, self.max_distinct);
            }
            if now_ms >= shard.next_sweep_ms {
                shard.sweep(now_ms);
            }
        }
    }

    fn release(&self, key: &CounterKey, amount: u64, at_ms: u64, now_ms: u64) {
        let mut shard = self
            .shard(&key.subject)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(series) = shard
            .subjects
            .get_mut(key.subject.as_str())
            .and_then(|series| {
                series
                    .iter_mut()
                    .find(|s| s.kind == key.kind && s.window_ms == key.window.millis)
            })
        else {
            return;
        };
        let now_ms = series.effective_now(now_ms);
        let Some(bucket) = bucket_in_window(series.window_ms, series.width_ms, at_ms, now_ms)
        else {
            return;
        };
        if let SeriesBody::Count(slots) = &mut series.body
            && let Some(slot) = slot_of(slots, bucket)
            && slot.bucket == Some(bucket)
        {
            slot.value = slot.value.saturating_sub(amount);
        }
    }

    #[cfg(test)]
    fn tracked_series(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.subjects.values().map(Vec::len).sum::<usize>()
            })
            .sum()
    }
}

impl Shard {
    /// Drop the series whose newest bucket left its window, and subjects left without series.
    fn sweep(&mut self, now_ms: u64) {
        self.subjects.retain(|_, series| {
            series.retain(|s| !s.is_stale(now_ms));
            !series.is_empty()
        });
        self.next_sweep_ms = now_ms.saturating_add(SWEEP_INTERVAL_MS);
    }
}

impl Series {
    fn new(kind: CounterKind, window: Window, buckets: u32) -> Self {
        let slots = usize::try_from(buckets).unwrap_or(1).max(1);
        let body = if kind.is_distinct() {
            SeriesBody::Distinct(DistinctSeries {
                last_touched: HashMap::new(),
                slots: (0..slots).map(|_| DistinctSlot::default()).collect(),
            })
        } else {
            SeriesBody::Count(vec![CountSlot::default(); slots])
        };
        Self {
            kind,
            window_ms: window.millis,
            width_ms: bucket_width(window, buckets),
            newest: 0,
            body,
        }
    }

    /// `now`, or the newest bucket's start if the clock went back behind it.
    fn effective_now(&self, now_ms: u64) -> u64 {
        now_ms.max(self.newest.saturating_mul(self.width_ms))
    }

    fn is_stale(&self, now_ms: u64) -> bool {
        let (first, _) = bucket_range(self.window_ms, self.width_ms, self.effective_now(now_ms));
        self.newest < first
    }

    fn usage(&self, now_ms: u64) -> u64 {
        let (first, last) = bucket_range(self.window_ms, self.width_ms, self.effective_now(now_ms));
        let in_window = |bucket: Option<u64>| bucket.is_some_and(|b| (first..=last).contains(&b));
        match &self.body {
            SeriesBody::Count(slots) => slots
                .iter()
                .filter(|slot| in_window(slot.bucket))
                .fold(0, |sum, slot| sum.saturating_add(slot.value)),
            SeriesBody::Distinct(distinct) => distinct
                .slots
                .iter()
                .filter(|slot| in_window(slot.bucket))
                .fold(0, |sum: u64, slot| {
                    let tracked = u64::try_from(slot.resources.len()).unwrap_or(u64::MAX);
                    sum.saturating_add(tracked).saturating_add(slot.untracked)
                }),
        }
    }

    fn consume(&mut self, consumption: &Consumption, now_ms: u64, max_distinct: usize) {
        let now_ms = self.effective_now(now_ms);
        let (first, bucket) = bucket_range(self.window_ms, self.width_ms, now_ms);
        self.newest = bucket;
        match (&mut self.body, consumption) {
            (SeriesBody::Count(slots), Consumption::Add(amount)) => {
                if let Some(slot) = slot_of(slots, bucket) {
                    if slot.bucket != Some(bucket) {
                        *slot = CountSlot {
                            bucket: Some(bucket),
                            value: 0,
                        };
                    }
                    slot.value = slot.value.saturating_add(*amount);
                }
            }
            (SeriesBody::Distinct(distinct), Consumption::Touch(resource)) => {
                distinct.touch(resource_digest(resource), first, bucket, max_distinct);
            }
            // Mismatches are refused before any update is applied (`CounterUpdate::check`).
            _ => {}
        }
    }
}

fn slot_of<T>(slots: &mut [T], bucket: u64) -> Option<&mut T> {
    let index = usize::try_from(bucket % u64::try_from(slots.len()).ok()?.max(1)).ok()?;
    slots.get_mut(index)
}

impl DistinctSeries {
    fn touch(&mut self, resource: [u8; 16], first: u64, bucket: u64, max_distinct: usize) {
        // Forget what left the window first, so the cap counts only resources still in it.
        for slot in &mut self.slots {
            if slot.bucket.is_some_and(|b| b < first) {
                forget(slot, &mut self.last_touched);
            }
        }
        let Some(slot) = slot_of(&mut self.slots, bucket) else {
            return;
        };
        if slot.bucket != Some(bucket) {
            forget(slot, &mut self.last_touched);
            slot.bucket = Some(bucket);
        }
        let previous = self.last_touched.get(&resource).copied();
        match previous {
            Some(touched) if touched == bucket => {}
            Some(touched) => {
                if let Some(old) = slot_of(&mut self.slots, touched) {
                    old.resources.remove(&resource);
                }
                if let Some(slot) = slot_of(&mut self.slots, bucket) {
                    slot.resources.insert(resource);
                }
                self.last_touched.insert(resource, bucket);
            }
            None if self.last_touched.len() >= max_distinct => {
                slot.untracked = slot.untracked.saturating_add(1);
            }
            None => {
                slot.resources.insert(resource);
                self.last_touched.insert(resource, bucket);
            }
        }
    }
}

/// Empty a slot, dropping its resources from the index of last touches.
fn forget(slot: &mut DistinctSlot, last_touched: &mut HashMap<[u8; 16], u64>) {
    for resource in slot.resources.drain() {
        if let Entry::Occupied(entry) = last_touched.entry(resource)
            && Some(*entry.get()) == slot.bucket
        {
            entry.remove();
        }
    }
    slot.bucket = None;
    slot.untracked = 0;
}

// ---------------------------------------------------------------------------------------------
// Redis backend

/// `DECRBY` of at most the bucket's value, on a bucket that exists (KEYS[1], ARGV[1] = amount).
const RELEASE_SCRIPT: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
    local n = math.min(v, tonumber(ARGV[1])) \
    if n > 0 then redis.call('DECRBY', KEYS[1], n) end \
    return n";

/// Delete the turn key (KEYS[1]) only if it still holds this holder's token (ARGV[1]): a turn that
/// expired and was taken by another sidecar is not ended by the late holder (the `SET NX`
/// lock pattern of Redis's `SET` documentation).
const END_TURN_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// How long a fleet-wide turn is held at most (its key's `PX`): a sidecar that stops while
/// holding one delays the others by no more than this.
pub const TURN_HOLD: Duration = Duration::from_secs(2);

/// The fleet-wide turn of one subject in Redis, from [`BudgetStore::take_turn`]. End it with
/// [`FleetTurn::end`]; dropped instead (an error path, a cancelled request), it is ended in the
/// background, and by [`TURN_HOLD`] at the latest.
pub struct FleetTurn {
    redis: RedisCounters,
    key: String,
    token: String,
    /// When the `SET` that took it was sent: the key expires [`TURN_HOLD`] after at the latest.
    taken_at: tokio::time::Instant,
    ended: bool,
}

impl fmt::Debug for FleetTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetTurn")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl FleetTurn {
    /// Whether the turn is still surely held for one more write to the counters: its key has
    /// not expired and will not within a Redis response timeout.
    pub fn still_held(&self) -> bool {
        self.taken_at.elapsed() + self.redis.response_timeout < TURN_HOLD
    }

    /// End the turn now (compare-and-delete: a key that expired and went to another sidecar is
    /// left alone), so the next decision for the subject does not wait for it.
    pub async fn end(mut self) {
        self.ended = true;
        end_turn(&self.redis, &self.key, &self.token).await;
    }
}

async fn end_turn(redis: &RedisCounters, key: &str, token: &str) {
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("EVAL")
        .arg(END_TURN_SCRIPT)
        .arg(1)
        .arg(key)
        .arg(token)
        .ignore();
    if let Err(err) = redis.run::<()>(&pipeline, "end a turn").await {
        tracing::warn!(error = %err, "cannot end a fleet-wide decision turn; it expires by itself");
    }
}

impl Drop for FleetTurn {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let redis = self.redis.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        // Without a runtime (process ending) the key expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { end_turn(&redis, &key, &token).await });
        }
    }
}

/// What [`BudgetStore::take_turn`] got.
#[derive(Debug)]
pub enum Turn {
    /// The counters are this sidecar's alone (memory): its own lock is the whole turn.
    Local,
    /// The subject's fleet-wide turn.
    Fleet(FleetTurn),
    /// Another sidecar kept the turn past the wait, or Redis did not answer in time.
    Unavailable,
}

impl BudgetStore {
    /// Take the turn of `subject` among every sidecar sharing these counters (Redis: `SET key
    /// token NX PX` with a random token, retried with a short backoff; the whole wait, Redis's
    /// answers included, bounded by `wait`). Memory counters are this sidecar's own:
    /// [`Turn::Local`].
    pub async fn take_turn(&self, subject: &str, wait: Duration) -> Turn {
        let Backend::Redis(redis) = &self.backend else {
            return Turn::Local;
        };
        let digest = Sha256::digest(subject.as_bytes());
        let mut token = [0_u8; 16];
        rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut token);
        // Made before the first `SET`: a `SET` that ran in Redis but whose answer was lost (a
        // timeout, a cancelled request) is still ended when this guard is dropped.
        let mut turn = FleetTurn {
            redis: redis.clone(),
            key: format!(
                "{}turn:{}",
                redis.prefix,
                hex::encode(digest.first_chunk::<16>().copied().unwrap_or_default())
            ),
            token: hex::encode(token),
            taken_at: tokio::time::Instant::now(),
            ended: false,
        };
        let hold_ms = u64::try_from(TURN_HOLD.as_millis()).unwrap_or(u64::MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let mut pipeline = redis::pipe();
            pipeline
                .cmd("SET")
                .arg(&turn.key)
                .arg(&turn.token)
                .arg("NX")
                .arg("PX")
                .arg(hold_ms);
            turn.taken_at = tokio::time::Instant::now();
            let attempt = redis.run::<(Option<String>,)>(&pipeline, "take a turn");
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok((Some(_),))) => return Turn::Fleet(turn),
                Ok(Ok((None,))) => {}
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "cannot take a fleet-wide decision turn");
                    return Turn::Unavailable;
                }
                Err(_) => return Turn::Unavailable,
            }
            if tokio::time::Instant::now() + pause > deadline {
                // Nothing was taken: no need to end anything.
                turn.ended = true;
                return Turn::Unavailable;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(8));
        }
    }
}

#[derive(Clone)]
struct RedisCounters {
    connection: ConnectionManager,
    prefix: String,
    buckets: u32,
    response_timeout: Duration,
}

impl RedisCounters {
    async fn connect(
        url: &str,
        prefix: &str,
        buckets: u32,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, BudgetError> {
        check_buckets(buckets)?;
        let client = redis::Client::open(url).map_err(BudgetError::RedisUrl)?;
        let address = client.get_connection_info().addr().to_string();
        // The manager reconnects by itself after a lost connection; each attempt is bounded, and
        // the whole first connection too (its retries included), so a start never hangs.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(1_000));
        let connection = tokio::time::timeout(
            connect_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| BudgetError::Timeout {
            what: "connect",
            limit: connect_timeout,
        })?
        .map_err(|source| BudgetError::RedisConnect { address, source })?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            buckets,
            response_timeout,
        })
    }

    /// `<prefix>{<subject digest>}:<kind>:<window ms>:` — the bucket start in ms follows.
    fn series_key(&self, key: &CounterKey) -> String {
        let digest = Sha256::digest(key.subject.as_bytes());
        let tag = hex::encode(digest.first_chunk::<16>().copied().unwrap_or_default());
        format!(
            "{}{{{tag}}}:{}:{}:",
            self.prefix,
            key.kind.as_str(),
            key.window.millis
        )
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
        what: &'static str,
    ) -> Result<T, BudgetError> {
        let mut connection = self.connection.clone();
        tokio::time::timeout(self.response_timeout, pipeline.query_async(&mut connection))
            .await
            .map_err(|_| BudgetError::Timeout {
                what,
                limit: self.response_timeout,
            })?
            .map_err(BudgetError::Redis)
    }

    async fn usage(&self, keys: &[CounterKey], now_ms: u64) -> Result<Vec<u64>, BudgetError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for key in keys {
            let width = bucket_width(key.window, self.buckets);
            let (first, last) = bucket_range(key.window.millis, width, now_ms);
            let series = self.series_key(key);
            let bucket_keys: Vec<String> = (first..=last)
                .map(|bucket| format!("{series}{}", bucket.saturating_mul(width)))
                .collect();
            let command = if key.kind.is_distinct() {
                "PFCOUNT"
            } else {
                "MGET"
            };
            pipeline.cmd(command).arg(bucket_keys);
        }
        let replies: Vec<redis::Value> = self.run(&pipeline, "usage").await?;
        if replies.len() != keys.len() {
            return Err(BudgetError::UnexpectedReply(format!(
                "{} replies to {} queries",
                replies.len(),
                keys.len()
            )));
        }
        keys.iter()
            .zip(replies)
            .map(|(key, reply)| {
                let parsed = if key.kind.is_distinct() {
                    redis::from_redis_value::<u64>(reply)
                } else {
                    redis::from_redis_value::<Vec<Option<u64>>>(reply)
                        .map(|values| values.into_iter().flatten().fold(0, u64::saturating_add))
                };
                parsed.map_err(|err| BudgetError::UnexpectedReply(err.to_string()))
            })
            .collect()
    }

    async fn release(
        &self,
        keys: &[&CounterKey],
        amount: u64,
        at_ms: u64,
        now_ms: u64,
    ) -> Result<(), BudgetError> {
        let amount = i64::try_from(amount).map_err(|_| BudgetError::AmountTooLarge(amount))?;
        let mut pipeline = redis::pipe();
        let mut commands = 0_usize;
        for key in keys {
            let width = bucket_width(key.window, self.buckets);
            let Some(bucket) = bucket_in_window(key.window.millis, width, at_ms, now_ms) else {
                continue;
            };
            let bucket_key = format!("{}{}", self.series_key(key), bucket.saturating_mul(width));
            // Atomic, and never below zero nor on a key that expired (it would come back as a
            // negative count without a TTL).
            pipeline
                .cmd("EVAL")
                .arg(RELEASE_SCRIPT)
                .arg(1)
                .arg(&bucket_key)
                .arg(amount)
                .ignore();
            commands += 1;
        }
        if commands == 0 {
            return Ok(());
        }
        self.run::<()>(&pipeline, "release").await
    }

    async fn consume(&self, updates: &[CounterUpdate], now_ms: u64) -> Result<(), BudgetError> {
        let mut pipeline = redis::pipe();
        let mut commands = 0_usize;
        for update in updates {
            let key = &update.key;
            let width = bucket_width(key.window, self.buckets);
            let bucket_start = (now_ms / width).saturating_mul(width);
            let bucket_key = format!("{}{bucket_start}", self.series_key(key));
            match &update.consumption {
                Consumption::Add(0) => continue,
                Consumption::Add(amount) => {
                    let amount =
                        i64::try_from(*amount).map_err(|_| BudgetError::AmountTooLarge(*amount))?;
                    pipeline.cmd("INCRBY").arg(&bucket_key).arg(amount).ignore();
                }
                Consumption::Touch(resource) => {
                    pipeline
                        .cmd("PFADD")
                        .arg(&bucket_key)
                        .arg(resource_digest(resource).as_slice())
                        .ignore();
                }
            }
            // A bucket is read while its start is within the window: until `start + window`,
            // which is at most `window + width` after any write into it.
            let ttl_ms = key.window.millis.saturating_add(width);
            pipeline
                .cmd("PEXPIRE")
                .arg(&bucket_key)
                .arg(ttl_ms)
                .ignore();
            commands += 1;
        }
        if commands == 0 {
            return Ok(());
        }
        self.run::<()>(&pipeline, "consume").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS_URL: &str = "redis://127.0.0.1:6379/";

    /// A time aligned on the hour, so bucket boundaries are easy to reason about.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_699_999_200)
    }

    fn at(secs: u64) -> SystemTime {
        t0() + Duration::from_secs(secs)
    }

    fn minute() -> Window {
        Window::from_secs(60).unwrap()
    }

    fn hour() -> Window {
        Window::from_secs(3600).unwrap()
    }

    fn add(subject: &str, kind: CounterKind, window: Window, amount: u64) -> CounterUpdate {
        CounterUpdate::new(
            CounterKey::new(subject, kind, window),
            Consumption::Add(amount),
        )
    }

    fn touch(subject: &str, window: Window, resource: &str) -> CounterUpdate {
        CounterUpdate::new(
            CounterKey::new(subject, CounterKind::Resources, window),
            Consumption::Touch(resource.to_owned()),
        )
    }

    async fn one(
        store: &BudgetStore,
        subject: &str,
        kind: CounterKind,
        window: Window,
        now: SystemTime,
    ) -> u64 {
        let usage = store
            .usage(&[CounterKey::new(subject, kind, window)], now)
            .await
            .unwrap();
        assert_eq!(usage.len(), 1);
        usage[0]
    }

    // Behaviour shared by both backends -------------------------------------------------------

    async fn counts_and_sums_accumulate_per_key(store: &BudgetStore) {
        let a = "agent:alpha";
        let b = "chain:orchestrator>helper-1";
        for _ in 0..3 {
            store
                .consume(
                    &[
                        add(a, CounterKind::Calls, minute(), 1),
                        add(a, CounterKind::Calls, hour(), 1),
                        add(a, CounterKind::Bytes, minute(), 1000),
                    ],
                    at(5),
                )
                .await
                .unwrap();
        }
        store
            .consume(
                &[
                    add(b, CounterKind::Destructive, minute(), 2),
                    add(a, CounterKind::Calls, minute(), 0),
                ],
                at(6),
            )
            .await
            .unwrap();
        let usage = store
            .usage(
                &[
                    CounterKey::new(a, CounterKind::Calls, minute()),
                    CounterKey::new(a, CounterKind::Calls, hour()),
                    CounterKey::new(a, CounterKind::Bytes, minute()),
                    CounterKey::new(a, CounterKind::Destructive, minute()),
                    CounterKey::new(b, CounterKind::Destructive, minute()),
                    CounterKey::new(b, CounterKind::Calls, minute()),
                    CounterKey::new("agent:never-seen", CounterKind::Resources, hour()),
                ],
                at(7),
            )
            .await
            .unwrap();
        assert_eq!(usage, vec![3, 3, 3000, 0, 2, 0, 0]);
        assert!(store.usage(&[], at(7)).await.unwrap().is_empty());
        store.consume(&[], at(7)).await.unwrap();
    }

    async fn the_window_slides_bucket_by_bucket(store: &BudgetStore) {
        let s = "agent:slider";
        // One call at the start of each 10 s bucket of the first minute.
        for i in 0..6 {
            store
                .consume(&[add(s, CounterKind::Calls, minute(), 1)], at(i * 10))
                .await
                .unwrap();
        }
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(59)).await, 6);
        // At 60 s the bucket starting at 0 s leaves the window, then one bucket per 10 s.
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(60)).await, 5);
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(69)).await, 5);
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(70)).await, 4);
        assert_eq!(
            one(store, s, CounterKind::Calls, minute(), at(110)).await,
            0
        );
        // The hour window still sees all of them.
        store
            .consume(&[add(s, CounterKind::Calls, hour(), 6)], at(1))
            .await
            .unwrap();
        assert_eq!(one(store, s, CounterKind::Calls, hour(), at(3599)).await, 6);
        assert_eq!(one(store, s, CounterKind::Calls, hour(), at(3600)).await, 0);
        // A bucket slot reused after its window restarts from zero.
        store
            .consume(&[add(s, CounterKind::Calls, minute(), 1)], at(120))
            .await
            .unwrap();
        assert_eq!(
            one(store, s, CounterKind::Calls, minute(), at(125)).await,
            1
        );
    }

    async fn distinct_resources_count_once_per_window(store: &BudgetStore) {
        let s = "agent:reader";
        for resource in ["file:///a", "file:///b", "file:///a", "db:orders"] {
            store
                .consume(&[touch(s, minute(), resource)], at(1))
                .await
                .unwrap();
        }
        assert_eq!(
            one(store, s, CounterKind::Resources, minute(), at(2)).await,
            3
        );
        // Touched again in a later bucket: still one resource, now kept longer than the others.
        store
            .consume(&[touch(s, minute(), "file:///a")], at(30))
            .await
            .unwrap();
        assert_eq!(
            one(store, s, CounterKind::Resources, minute(), at(31)).await,
            3
        );
        assert_eq!(
            one(store, s, CounterKind::Resources, minute(), at(60)).await,
            1
        );
        assert_eq!(
            one(store, s, CounterKind::Resources, minute(), at(90)).await,
            0
        );
    }

    async fn mismatched_consumption_records_nothing(store: &BudgetStore) {
        let s = "agent:mismatch";
        let err = store
            .consume(
                &[
                    add(s, CounterKind::Calls, minute(), 1),
                    add(s, CounterKind::Resources, minute(), 1),
                ],
                at(1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BudgetError::ConsumptionMismatch {
                    kind: CounterKind::Resources,
                    ..
                }
            ),
            "{err}"
        );
        let wrong_touch = CounterUpdate::new(
            CounterKey::new(s, CounterKind::Bytes, minute()),
            Consumption::Touch("x".into()),
        );
        assert!(store.consume(&[wrong_touch], at(1)).await.is_err());
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(2)).await, 0);
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            store
                .usage(
                    &[CounterKey::new(s, CounterKind::Calls, minute())],
                    before_epoch
                )
                .await,
            Err(BudgetError::ClockBeforeEpoch)
        ));
    }

    async fn released_calls_leave_their_bucket(store: &BudgetStore) {
        let s = "agent:leaser";
        let calls = CounterKey::new(s, CounterKind::Calls, minute());
        let resources = CounterKey::new(s, CounterKind::Resources, minute());
        // A reservation of 10 calls at 5 s, another call at 15 s.
        store
            .consume(
                &[
                    add(s, CounterKind::Calls, minute(), 10),
                    touch(s, minute(), "srv/tool"),
                ],
                at(5),
            )
            .await
            .unwrap();
        store
            .consume(&[add(s, CounterKind::Calls, minute(), 1)], at(15))
            .await
            .unwrap();
        // 7 unused calls of the reservation come back, from its own bucket; the touch stays.
        store
            .release(&[calls.clone(), resources], 7, at(5), at(20))
            .await
            .unwrap();
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(21)).await, 4);
        assert_eq!(
            one(store, s, CounterKind::Resources, minute(), at(21)).await,
            1
        );
        // Never below zero: more than the bucket holds takes it to zero, the other bucket stays.
        store
            .release(std::slice::from_ref(&calls), 100, at(5), at(22))
            .await
            .unwrap();
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(23)).await, 1);
        // A bucket that has left its window is not touched (nothing comes back twice, and
        // nothing is taken from the newer bucket).
        store
            .release(std::slice::from_ref(&calls), 1, at(5), at(69))
            .await
            .unwrap();
        assert_eq!(one(store, s, CounterKind::Calls, minute(), at(69)).await, 1);
        // Nothing reserved, nothing to give back: no counter appears.
        store
            .release(
                &[CounterKey::new(
                    "agent:nobody",
                    CounterKind::Calls,
                    minute(),
                )],
                3,
                at(5),
                at(6),
            )
            .await
            .unwrap();
        assert_eq!(
            one(store, "agent:nobody", CounterKind::Calls, minute(), at(7)).await,
            0
        );
    }

    // Memory ---------------------------------------------------------------------------------

    #[tokio::test]
    async fn memory_release() {
        released_calls_leave_their_bucket(&memory()).await;
    }

    fn memory() -> BudgetStore {
        BudgetStore::memory(DEFAULT_BUCKETS).unwrap()
    }

    #[tokio::test]
    async fn memory_counts_and_sums() {
        counts_and_sums_accumulate_per_key(&memory()).await;
    }

    #[tokio::test]
    async fn memory_window_slides() {
        the_window_slides_bucket_by_bucket(&memory()).await;
    }

    #[tokio::test]
    async fn memory_distinct() {
        distinct_resources_count_once_per_window(&memory()).await;
    }

    #[tokio::test]
    async fn memory_mismatch() {
        mismatched_consumption_records_nothing(&memory()).await;
    }

    #[tokio::test]
    async fn memory_clones_share_counters() {
        let store = memory();
        let clone = store.clone();
        clone
            .consume(&[add("agent:a", CounterKind::Calls, minute(), 4)], at(1))
            .await
            .unwrap();
        assert_eq!(
            one(&store, "agent:a", CounterKind::Calls, minute(), at(2)).await,
            4
        );
        assert_eq!(store.backend_name(), "memory");
        assert_eq!(store.buckets(), DEFAULT_BUCKETS);
    }

    #[tokio::test]
    async fn memory_distinct_cap_reports_an_upper_bound() {
        let store = BudgetStore::memory_with_max_distinct(DEFAULT_BUCKETS, 3).unwrap();
        let s = "agent:crawler";
        for resource in ["a", "b", "c", "d", "e", "d", "a"] {
            store
                .consume(&[touch(s, minute(), resource)], at(1))
                .await
                .unwrap();
        }
        // a, b, c tracked; d, e, d untracked touches count one each; a is tracked, counted once.
        assert_eq!(
            one(&store, s, CounterKind::Resources, minute(), at(2)).await,
            6
        );
        // Once the window has passed, the series tracks again from empty.
        for resource in ["d", "e"] {
            store
                .consume(&[touch(s, minute(), resource)], at(61))
                .await
                .unwrap();
        }
        assert_eq!(
            one(&store, s, CounterKind::Resources, minute(), at(62)).await,
            2
        );
    }

    #[tokio::test]
    async fn memory_stale_series_are_pruned() {
        let store = memory();
        let Backend::Memory(counters) = &store.backend else {
            unreachable!()
        };
        for i in 0..200 {
            store
                .consume(
                    &[
                        add(&format!("agent:{i}"), CounterKind::Calls, minute(), 1),
                        touch(&format!("agent:{i}"), minute(), "r"),
                    ],
                    at(1),
                )
                .await
                .unwrap();
        }
        assert_eq!(counters.tracked_series(), 400);
        // Long after the window, activity on every shard sweeps the stale series away.
        let later = at(3600);
        for i in 0..200 {
            store
                .consume(
                    &[add(
                        &format!("agent:new-{i}"),
                        CounterKind::Calls,
                        minute(),
                        1,
                    )],
                    later,
                )
                .await
                .unwrap();
        }
        assert_eq!(counters.tracked_series(), 200);
        assert_eq!(
            one(&store, "agent:7", CounterKind::Calls, minute(), later).await,
            0
        );
    }

    #[tokio::test]
    async fn memory_clock_going_back_loses_nothing() {
        let store = memory();
        let s = "agent:skew";
        store
            .consume(&[add(s, CounterKind::Calls, minute(), 1)], at(30))
            .await
            .unwrap();
        store
            .consume(&[add(s, CounterKind::Calls, minute(), 1)], at(5))
            .await
            .unwrap();
        assert_eq!(one(&store, s, CounterKind::Calls, minute(), at(5)).await, 2);
        assert_eq!(
            one(&store, s, CounterKind::Calls, minute(), at(31)).await,
            2
        );
    }

    #[tokio::test]
    async fn one_bucket_is_a_fixed_window() {
        let store = BudgetStore::memory(1).unwrap();
        let s = "agent:fixed";
        store
            .consume(&[add(s, CounterKind::Calls, minute(), 1)], at(59))
            .await
            .unwrap();
        assert_eq!(
            one(&store, s, CounterKind::Calls, minute(), at(59)).await,
            1
        );
        assert_eq!(
            one(&store, s, CounterKind::Calls, minute(), at(60)).await,
            0
        );
    }

    #[test]
    fn bucket_ranges_follow_the_window() {
        // 60 s in 6 buckets of 10 s: at 125 s, buckets starting 70..=120 s.
        assert_eq!(bucket_range(60_000, 10_000, 125_000), (7, 12));
        assert_eq!(bucket_range(60_000, 10_000, 130_000), (8, 13));
        assert_eq!(bucket_range(60_000, 10_000, 5_000), (0, 0));
        // A window that buckets do not divide: never more buckets than configured.
        let window = Window::new(Duration::from_millis(1000)).unwrap();
        let width = bucket_width(window, 7);
        assert_eq!(width, 143);
        for now in 10_000..12_000 {
            let (first, last) = bucket_range(1000, width, now);
            assert!(last - first < 7, "{now}: {first}..={last}");
        }
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(matches!(
            Window::from_secs(0),
            Err(BudgetError::InvalidWindow(_))
        ));
        assert!(Window::new(Duration::from_micros(999)).is_err());
        assert!(Window::new(MAX_WINDOW + Duration::from_secs(1)).is_err());
        assert_eq!(
            Window::from_secs(60).unwrap().duration(),
            Duration::from_secs(60)
        );
        assert!(matches!(
            BudgetStore::memory(0),
            Err(BudgetError::InvalidBuckets(0))
        ));
        assert!(BudgetStore::memory(MAX_BUCKETS + 1).is_err());
        assert!(matches!(
            BudgetStore::memory_with_max_distinct(6, 0),
            Err(BudgetError::InvalidMaxDistinct)
        ));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[serde(default)]
        budget: BudgetBackendConfig,
    }

    fn parse(text: &str) -> Result<BudgetBackendConfig, toml::de::Error> {
        toml::from_str::<Section>(text).map(|section| section.budget)
    }

    #[test]
    fn config_defaults_and_backends() {
        assert_eq!(parse("").unwrap(), BudgetBackendConfig::default());
        assert_eq!(
            parse("[budget]\nbackend = \"memory\"\nbuckets = 12\n").unwrap(),
            BudgetBackendConfig::Memory {
                buckets: 12,
                max_distinct: DEFAULT_MAX_DISTINCT
            }
        );
        assert_eq!(
            parse("[budget]\nbackend = \"redis\"\nurl = \"redis://10.0.0.1:6379/2\"\n").unwrap(),
            BudgetBackendConfig::Redis {
                url: "redis://10.0.0.1:6379/2".into(),
                prefix: DEFAULT_REDIS_PREFIX.into(),
                buckets: DEFAULT_BUCKETS,
                connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
                response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT_MS,
            }
        );
        let unknown = parse("[budget]\nbackend = \"memory\"\nbucket = 12\n").unwrap_err();
        assert!(unknown.to_string().contains("bucket"), "{unknown}");
        assert!(parse("[budget]\nbackend = \"memory\"\nurl = \"redis://x\"\n").is_err());
        assert!(parse("[budget]\nbackend = \"redis\"\n").is_err());
        assert!(parse("[budget]\nbackend = \"etcd\"\n").is_err());
        let zero = parse("[budget]\nbackend = \"memory\"\nbuckets = 0\n").unwrap();
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("`buckets`")
        );
        let bad_url = parse("[budget]\nbackend = \"redis\"\nurl = \"http://x\"\n").unwrap();
        assert!(matches!(bad_url.validate(), Err(BudgetError::RedisUrl(_))));
        let no_timeout =
            parse("[budget]\nbackend = \"redis\"\nurl = \"redis://x\"\nresponse_timeout_ms = 0\n")
                .unwrap();
        assert!(
            no_timeout
                .validate()
                .unwrap_err()
                .to_string()
                .contains("response_timeout_ms")
        );
    }

    #[test]
    fn debug_hides_the_redis_password() {
        let config =
            parse("[budget]\nbackend = \"redis\"\nurl = \"redis://user:s3cret@cache:6379/0\"\n")
                .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("redis://***@cache:6379/0"), "{debug}");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("redis://:pw@cache/a@b"), "redis://***@cache/a@b");
    }

    // Redis ----------------------------------------------------------------------------------

    fn test_prefix(name: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("behavry:budget-test:{name}:{}:{nanos}:", std::process::id())
    }

    async fn redis_store(prefix: &str) -> BudgetStore {
        BudgetStore::redis(REDIS_URL, prefix, DEFAULT_BUCKETS)
            .await
            .unwrap()
    }

    /// Every key under `prefix` (deleted, and counted so tests can check keys were written).
    async fn delete_keys(prefix: &str) -> usize {
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        keys.len()
    }

    #[tokio::test]
    async fn a_turn_is_one_sidecars_at_a_time_fleet_wide_and_only_its_holder_ends_it() {
        let prefix = test_prefix("turn");
        let (first, second) = (redis_store(&prefix).await, redis_store(&prefix).await);
        let wait = Duration::from_millis(20);
        let Turn::Fleet(held) = first.take_turn("agent-a", wait).await else {
            panic!("a free turn is taken");
        };
        // Another sidecar waits, then goes without; another subject is not held up.
        assert!(matches!(
            second.take_turn("agent-a", wait).await,
            Turn::Unavailable
        ));
        assert!(matches!(
            second.take_turn("agent-b", wait).await,
            Turn::Fleet(_)
        ));
        let key = held.key.clone();
        drop(held);
        // Ended in the background: taken again within the wait.
        let Turn::Fleet(again) = second
            .take_turn("agent-a", Duration::from_millis(500))
            .await
        else {
            panic!("an ended turn is free again");
        };
        // A holder whose turn expired and went to someone else does not end theirs.
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("someone-else")
            .query_async(&mut connection)
            .await
            .unwrap();
        drop(again);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("someone-else"));
        // A turn is held for one more write only while its key surely has not expired.
        let Turn::Fleet(fresh) = first.take_turn("agent-c", wait).await else {
            panic!("a free turn is taken");
        };
        assert!(fresh.still_held());
        tokio::time::sleep(TURN_HOLD - Duration::from_millis(DEFAULT_RESPONSE_TIMEOUT_MS) + wait)
            .await;
        assert!(!fresh.still_held());
        fresh.end().await;
        // Memory counters are one sidecar's: its own lock is the whole turn.
        assert!(matches!(
            BudgetStore::memory(DEFAULT_BUCKETS)
                .unwrap()
                .take_turn("agent-a", wait)
                .await,
            Turn::Local
        ));
        delete_keys(&prefix).await;
    }

    #[tokio::test]
    async fn redis_behaves_like_memory() {
        let prefix = test_prefix("behaviour");
        let store = redis_store(&prefix).await;
        assert_eq!(store.backend_name(), "redis");
        counts_and_sums_accumulate_per_key(&store).await;
        the_window_slides_bucket_by_bucket(&store).await;
        distinct_resources_count_once_per_window(&store).await;
        mismatched_consumption_records_nothing(&store).await;
        released_calls_leave_their_bucket(&store).await;
        assert!(delete_keys(&prefix).await > 0);
    }

    #[tokio::test]
    async fn redis_keys_hide_the_subject_and_expire() {
        let prefix = test_prefix("keys");
        let store = redis_store(&prefix).await;
        let subject = "agent:*weird* {subject}\r\nDEL x";
        store
            .consume(&[add(subject, CounterKind::Calls, minute(), 1)], at(1))
            .await
            .unwrap();
        assert_eq!(
            one(&store, subject, CounterKind::Calls, minute(), at(2)).await,
            1
        );
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(!keys[0].contains("weird"), "{keys:?}");
        assert!(keys[0].ends_with(":calls:60000:1699999200000"), "{keys:?}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&keys[0])
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 70_000, "{ttl}");
        delete_keys(&prefix).await;
    }

    #[tokio::test]
    async fn two_sidecars_on_one_prefix_share_their_budgets() {
        let prefix = test_prefix("fleet");
        let first = redis_store(&prefix).await;
        let second = redis_store(&prefix).await;
        let s = "agent:roaming";
        first
            .consume(
                &[
                    add(s, CounterKind::Calls, minute(), 2),
                    touch(s, hour(), "repo:a"),
                ],
                at(1),
            )
            .await
            .unwrap();
        second
            .consume(
                &[
                    add(s, CounterKind::Calls, minute(), 3),
                    touch(s, hour(), "repo:b"),
                    touch(s, hour(), "repo:a"),
                ],
                at(2),
            )
            .await
            .unwrap();
        let keys = [
            CounterKey::new(s, CounterKind::Calls, minute()),
            CounterKey::new(s, CounterKind::Resources, hour()),
        ];
        assert_eq!(first.usage(&keys, at(3)).await.unwrap(), vec![5, 2]);
        assert_eq!(second.usage(&keys, at(3)).await.unwrap(), vec![5, 2]);
        // Another prefix is another fleet.
        let other_prefix = test_prefix("other-fleet");
        let other = redis_store(&other_prefix).await;
        assert_eq!(other.usage(&keys, at(3)).await.unwrap(), vec![0, 0]);
        delete_keys(&prefix).await;
        delete_keys(&other_prefix).await;
    }

    #[tokio::test]
    async fn redis_distinct_is_approximate_but_close() {
        let prefix = test_prefix("hll");
        let store = redis_store(&prefix).await;
        let s = "agent:bulk";
        for chunk in 0..10 {
            let updates: Vec<CounterUpdate> = (0..500)
                .map(|i| touch(s, hour(), &format!("file:///data/{}", chunk * 500 + i)))
                .collect();
            // Spread over the window's buckets: the union is counted, not the sum.
            store.consume(&updates, at(chunk * 300)).await.unwrap();
            store
                .consume(&updates[..100], at(chunk * 300 + 600))
                .await
                .unwrap();
        }
        let usage = one(&store, s, CounterKind::Resources, hour(), at(3599)).await;
        // HyperLogLog: 0.81% standard error; 3% is well beyond three standard deviations.
        assert!((4850..=5150).contains(&usage), "{usage}");
        delete_keys(&prefix).await;
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_a_hang() {
        let config = BudgetBackendConfig::Redis {
            url: "redis://127.0.0.1:1/".into(),
            prefix: DEFAULT_REDIS_PREFIX.into(),
            buckets: DEFAULT_BUCKETS,
            connect_timeout_ms: 500,
            response_timeout_ms: 100,
        };
        let err = config.open().await.unwrap_err();
        assert!(
            matches!(
                err,
                BudgetError::RedisConnect { .. }
                    | BudgetError::Timeout {
                        what: "connect",
                        ..
                    }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("Redis"), "{message}");
        assert!(
            BudgetStore::redis("redis://127.0.0.1:1/", "p:", 6)
                .await
                .is_err()
        );
    }

    /// Throughput of one decision's worth of budget work (usage of 4 counters, then consume of 4),
    /// for docs/performance.md: `cargo test -p behavry-authz --release budget::tests::throughput
    /// -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, prints numbers"]
    async fn throughput() {
        let prefix = test_prefix("throughput");
        for (name, store) in [("memory", memory()), ("redis", redis_store(&prefix).await)] {
            for concurrency in [1_u64, 16] {
                let iterations = 5_000_u64;
                let started = std::time::Instant::now();
                let tasks: Vec<_> = (0..concurrency)
                    .map(|task| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let subject = format!("agent:bench-{task}");
                            let keys = [
                                CounterKey::new(&subject, CounterKind::Calls, minute()),
                                CounterKey::new(&subject, CounterKind::Calls, hour()),
                                CounterKey::new(&subject, CounterKind::Bytes, hour()),
                                CounterKey::new(&subject, CounterKind::Resources, hour()),
                            ];
                            for i in 0..iterations / concurrency {
                                let now = SystemTime::now();
                                let _ = store.usage(&keys, now).await.unwrap();
                                let updates = [
                                    add(&subject, CounterKind::Calls, minute(), 1),
                                    add(&subject, CounterKind::Calls, hour(), 1),
                                    add(&subject, CounterKind::Bytes, hour(), 512),
                                    touch(&subject, hour(), &format!("res:{}", i % 100)),
                                ];
                                store.consume(&updates, now).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let elapsed = started.elapsed();
                println!(
                    "{name}, {concurrency} concurrent: {:.0} usage+consume pairs/s ({:.1} µs each)",
                    iterations as f64 / elapsed.as_secs_f64(),
                    elapsed.as_secs_f64() * 1e6 / iterations as f64
                );
            }
        }
        delete_keys(&prefix).await;
    }
}
