//! SQLite storage of the hash-chained log (sqlx, WAL, `synchronous=FULL`).
//!
//! Appends run in one `BEGIN IMMEDIATE` transaction per batch: the write lock is taken before the
//! head is read, so two batches (from this process or another one on the same file) cannot both
//! read the same head and fork the chain (SQLite `lang_transaction.html`, "immediate"). A batch is
//! acknowledged only after `COMMIT` returns, and with `synchronous=FULL` in WAL mode a committed
//! transaction survives a power loss (SQLite `pragma.html#pragma_synchronous`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use behavry_core::merkle::{self, Frontier, NodeId};
use behavry_core::wire::{AuditEvent, AuditKind, IngestAck, RequestFacts};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Mutex;

use crate::chain::{ChainHash, ChainHead, GENESIS_PREV_HASH, StoredRecord, chain_hash};
use crate::checkpoint::{Checkpoint, NoteSigner};
use crate::export::{ExportLine, Inclusion, hex_hashes};
use crate::ingest::IngestEvent;
use crate::verify::{Failure, LogVerifier, Summary, node_records};

/// How long a writer waits for another connection's write lock before giving up (then the batch
/// is answered 503 and the sender retries).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the sink's pool (readers share it with the one writer at a time).
pub const POOL_CONNECTIONS: u32 = 4;

/// Events per multi-row statement of an append (9 bound values each: far below SQLite's limit of
/// 32 766 variables per statement).
const INSERT_CHUNK_ROWS: usize = 500;

/// Tree nodes per multi-row statement (3 bound values each).
const NODE_CHUNK_ROWS: usize = 2000;

/// How long an export waits for its reader to take the next line before it stops.
pub const EXPORT_STALL: Duration = Duration::from_secs(30);

/// Rows read per query during verification.
const VERIFY_PAGE_ROWS: i64 = 4096;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file does not exist (verification never creates one).
    #[error("audit database {0} does not exist")]
    Missing(PathBuf),
    /// The database could not be opened.
    #[error("cannot open audit database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate audit database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed (locked too long, disk full, I/O error, not an audit database...).
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The log's tree no longer extends the checkpoint of this size: nothing more is signed.
    #[error(
        "the log no longer extends the checkpoint of size {size} it signed: not signing another (run `behavry audit verify`)"
    )]
    Forked {
        /// The checkpoint's size.
        size: u64,
    },
    /// A checkpoint could not be signed.
    #[error("cannot sign a checkpoint: {0}")]
    Signing(String),
    /// An export's range is not in the log.
    #[error("{0}")]
    BadRange(String),
    /// A stored row cannot be read back as written; run `behavry audit verify`.
    #[error("stored record seq={seq} is corrupt: {what}")]
    Corrupt {
        /// Stored seq of the row.
        seq: i64,
        /// What is wrong.
        what: String,
    },
}

/// One event of a trace, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    /// Position in the log.
    pub seq: u64,
    /// The record's chain hash.
    pub hash: ChainHash,
    /// The previous record's chain hash.
    pub prev_hash: ChainHash,
    /// The event.
    pub event: AuditEvent,
}

/// Filters of a trace search; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceQuery {
    /// The agent (token `sub`).
    pub agent: Option<String>,
    /// The upstream server's name.
    pub server: Option<String>,
    /// The tool called, or the prompt or resource asked for.
    pub tool: Option<String>,
    /// The MCP session id.
    pub session: Option<String>,
    /// `allow` or `deny`: a decision record of the trace says so.
    pub decision: Option<String>,
    /// Records at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Records before this time.
    pub until_ms: Option<i64>,
    /// Only traces whose first matching record is before this seq (the next page).
    pub before_seq: Option<i64>,
    /// At most this many traces.
    pub limit: u32,
}

/// One trace a search found: what its first record names, its span in time, its decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceMatch {
    /// The trace.
    pub trace_id: String,
    /// Its first record matching the search (the page cursor).
    pub first_seq: u64,
    /// Its first and last record's time.
    pub start_ms: i64,
    /// Its last record's time.
    pub end_ms: i64,
    /// How many records it has.
    pub events: u64,
    /// What its first searched record (its first call's decision) names.
    pub agent: Option<String>,
    /// The server.
    pub server: Option<String>,
    /// The method.
    pub method: Option<String>,
    /// The tool, prompt or resource.
    pub tool: Option<String>,
    /// The session.
    pub session_id: Option<String>,
    /// `deny` when a decision of it denied, else `allow` when one allowed.
    pub decision: Option<String>,
}

/// A search row as read.
#[derive(sqlx::FromRow)]
struct SearchRow {
    trace_id: String,
    agent: Option<String>,
    server: Option<String>,
    method: Option<String>,
    target: Option<String>,
    session_id: Option<String>,
    decision: Option<String>,
}

/// Result of verifying a whole database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Every record, tree node and checkpoint checks out.
    Intact(Summary),
    /// The first thing wrong.
    Broken(Failure),
}

/// The audit log in one SQLite file.
#[derive(Debug, Clone)]
pub struct AuditStore {
    pool: SqlitePool,
    /// Serializes this process's writers so they queue here instead of spinning in SQLite's busy
    /// handler; `BEGIN IMMEDIATE` still guards against other processes. It holds the tree's
    /// frontier as this process last committed it: valid while the log still has that many
    /// records (nobody else appended), so a batch need not read it again.
    write_lock: Arc<Mutex<Option<Frontier>>>,
}

impl AuditStore {
    /// Open (creating if needed) the database at `path` for the sink, and migrate its schema.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, |options| options).await
    }

    /// [`AuditStore::open`] with the connection options changed by `tweak` (tests: a capped
    /// database that fills up).
    pub(crate) async fn open_with(
        path: &Path,
        tweak: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> Result<Self, StoreError> {
        let options = tweak(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(BUSY_TIMEOUT),
        );
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let store = Self {
            pool,
            write_lock: Arc::new(Mutex::new(None)),
        };
        // A log written before the tree existed gets its nodes now.
        let _writer = store.write_lock.lock().await;
        let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await?;
        let size: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_records")
            .fetch_one(&mut *tx)
            .await?;
        fill_tree(&mut tx, size.unwrap_or(0)).await?;
        // Records from before trace search get their search rows (derived from the bodies).
        sqlx::query(FILL_SEARCH).execute(&mut *tx).await?;
        tx.commit().await?;
        drop(_writer);
        Ok(store)
    }

    /// Open an existing database read-only, for offline verification. Never creates a file.
    pub async fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            pool,
            write_lock: Arc::new(Mutex::new(None)),
        })
    }

    /// Close the pool (checkpoints the WAL when this is the last connection to the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Append a parsed batch: events whose `eventId` is already stored (or earlier in the batch)
    /// are counted as duplicates, the others get the next seqs. Returns after `COMMIT`.
    pub async fn append_batch(&self, events: &[IngestEvent]) -> Result<IngestAck, StoreError> {
        let mut frontier = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (mut last_seq, mut prev_hash) = match head {
            None => (0_i64, GENESIS_PREV_HASH),
            Some((seq, hash)) => (seq, stored_hash(seq, "hash", &hash)?),
        };
        let received_at_ms = now_ms();
        let mut ack = IngestAck {
            appended: 0,
            duplicates: 0,
        };
        // One query for the batch's ids already stored, and one multi-row insert per chunk:
        // a statement per event costs a round trip to sqlx's SQLite thread each.
        let ids: Vec<&str> = events.iter().map(|e| e.event.event_id.as_str()).collect();
        let mut seen = stored_ids(&mut tx, &ids).await?;
        let mut rows = Vec::with_capacity(events.len());
        for item in events {
            // `seen` holds this batch's ids too, so in-batch repeats are duplicates as well.
            if !seen.insert(item.event.event_id.as_str()) {
                ack.duplicates += 1;
                continue;
            }
            let seq = last_seq + 1;
            let hash = chain_hash(&prev_hash, &item.canonical);
            rows.push((seq, item, prev_hash, hash));
            last_seq = seq;
            prev_hash = hash;
            ack.appended += 1;
        }
        for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_records \
                 (seq, event_id, trace_id, kind, time_ms, body, prev_hash, hash, received_at_ms) ",
            );
            insert.push_values(chunk, |mut row, (seq, item, prev_hash, hash)| {
                row.push_bind(*seq)
                    .push_bind(item.event.event_id.as_str())
                    .push_bind(item.event.trace_id.as_str())
                    .push_bind(item.event.kind.as_str())
                    .push_bind(item.time_ms)
                    .push_bind(item.canonical.as_slice())
                    .push_bind(prev_hash.as_slice())
                    .push_bind(hash.as_slice())
                    .push_bind(received_at_ms);
            });
            insert.build().execute(&mut *tx).await?;
        }
        // One search row per call, its decision (which names all its intent does); an outcome
        // only when its call has no decision (a GET stream's, a client's answer); any other
        // kind (policy) always. A third of the rows to index of one a record.
        let decided = decided_spans(&mut tx, &rows).await?;
        let searched: Vec<_> = rows
            .iter()
            .filter(|(_, item, _, _)| match item.event.kind {
                AuditKind::Intent => false,
                AuditKind::Outcome => !decided.contains(&decision_id(&item.event)),
                AuditKind::Decision | AuditKind::Policy => true,
            })
            .collect();
        for chunk in searched.chunks(INSERT_CHUNK_ROWS) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_search \
                 (seq, trace_id, time_ms, kind, agent, server, method, target, session_id, decision) ",
            );
            insert.push_values(chunk, |mut row, (seq, item, _, _)| {
                let event = &item.event;
                let request = &event.request;
                row.push_bind(seq)
                    .push_bind(event.trace_id.as_str())
                    .push_bind(item.time_ms)
                    .push_bind(event.kind.as_str())
                    .push_bind(event.agent.as_deref())
                    .push_bind(request.server.as_str())
                    .push_bind(request.method.as_str())
                    .push_bind(search_target(request))
                    .push_bind(request.session_id.as_deref())
                    .push_bind(search_decision(event));
            });
            insert.build().execute(&mut *tx).await?;
        }
        // The records' leaves and the subtrees they complete, in the same transaction, from the
        // frontier this process holds when nobody else appended since (else read again).
        let before = last_seq - i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let first = u64::try_from(before).unwrap_or(0);
        let known = match frontier.take() {
            Some(known) if known.size() == first => known,
            _ => {
                fill_tree(&mut tx, before).await?;
                load_frontier(&mut tx, first).await?
            }
        };
        let leaves: Vec<merkle::Hash> = rows
            .iter()
            .map(|(_, item, _, _)| merkle::leaf_hash(&item.canonical))
            .collect();
        let (made, next) = grow_tree(known, &leaves);
        insert_nodes(&mut tx, &made).await?;
        // Nothing is kept of a batch that did not commit (`frontier` is empty until here).
        tx.commit().await?;
        *frontier = Some(next);
        Ok(ack)
    }

    /// The Merkle tree head of the first `size` records (RFC 9162 §2.1.1); `None` when the log
    /// is shorter.
    pub async fn tree_head(&self, size: u64) -> Result<Option<merkle::Hash>, StoreError> {
        if size == 0 {
            return Ok(Some(merkle::empty_root()));
        }
        self.with_nodes(size, |root| root(0, size)).await
    }

    /// Signs a checkpoint of the whole log as it is now, unless the last one already covers it
    /// (`None` then). The tree of the last checkpoint must still be the first part of the log's
    /// tree: a log that no longer extends it is not signed again (RFC 9162 §2.1.4: a consistent
    /// history), and the error names the checkpoint.
    pub async fn sign_checkpoint(
        &self,
        signer: &NoteSigner,
        origin: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let _writer = self.write_lock.lock().await;
        let last: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT size, root FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let size: Option<i64> =
            sqlx::query_scalar("SELECT MAX(idx) + 1 FROM audit_tree_nodes WHERE level = 0")
                .fetch_one(&self.pool)
                .await?;
        let size = u64::try_from(size.unwrap_or(0)).unwrap_or(0);
        if let Some((last_size, last_root)) = &last {
            let last_size = u64::try_from(*last_size).unwrap_or(u64::MAX);
            if last_size >= size {
                return Ok(None);
            }
            if self.tree_head(last_size).await?.as_ref().map(|h| &h[..]) != Some(&last_root[..]) {
                return Err(StoreError::Forked { size: last_size });
            }
        }
        if size == 0 {
            return Ok(None);
        }
        let Some(root) = self.tree_head(size).await? else {
            return Ok(None);
        };
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        };
        let note = signer
            .sign(&checkpoint.body())
            .map_err(|err| StoreError::Signing(err.to_string()))?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, root, note, signed_at_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(root.to_vec())
        .bind(&note)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(Some(checkpoint))
    }

    /// The newest signed checkpoint note, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The leaf hash of record `seq` as the tree holds it.
    pub async fn leaf_hash(&self, seq: u64) -> Result<Option<merkle::Hash>, StoreError> {
        let Some(index) = seq.checked_sub(1) else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        let nodes = load_nodes(&mut tx, &[(0, index)]).await?;
        tx.rollback().await?;
        Ok(nodes.get(&(0, index)).copied())
    }

    /// The inclusion proof of record `seq` in the tree of the first `size` records.
    pub async fn inclusion_proof(
        &self,
        seq: u64,
        size: u64,
    ) -> Result<Option<Vec<merkle::Hash>>, StoreError> {
        let Some(index) = seq.checked_sub(1) else {
            return Ok(None);
        };
        self.with_nodes(size, |root| merkle::inclusion_proof(index, size, root))
            .await
    }

    /// The consistency proof of the tree of the first `from` records with that of the first
    /// `to`.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Option<Vec<merkle::Hash>>, StoreError> {
        self.with_nodes(to, |root| merkle::consistency_proof(from, to, root))
            .await
    }

    /// Runs `build` (a tree head or proof over subtree hashes) twice in one read snapshot: once
    /// to learn the stored nodes it needs, then on them. `None` when the tree has fewer than
    /// `size` leaves (a proof can be made of siblings alone: the leaf itself must exist) or a
    /// node is not stored.
    async fn with_nodes<T>(
        &self,
        size: u64,
        build: impl Fn(&dyn Fn(u64, u64) -> Option<merkle::Hash>) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let built = with_nodes_in(&mut tx, size, build).await;
        tx.rollback().await?;
        built
    }

    /// The events of one trace, in seq order (empty when the trace is unknown).
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<TraceRecord>, StoreError> {
        let rows: Vec<TraceRow> = sqlx::query_as(
            "SELECT seq, body, prev_hash, hash FROM audit_records WHERE trace_id = ? ORDER BY seq",
        )
        .bind(trace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |TraceRow {
                     seq,
                     body,
                     prev_hash,
                     hash,
                 }| {
                    let event: AuditEvent =
                        serde_json::from_slice(&body).map_err(|err| StoreError::Corrupt {
                            seq,
                            what: format!("body is not an audit event: {err}"),
                        })?;
                    Ok(TraceRecord {
                        seq: stored_seq(seq)?,
                        hash: stored_hash(seq, "hash", &hash)?,
                        prev_hash: stored_hash(seq, "prev_hash", &prev_hash)?,
                        event,
                    })
                },
            )
            .collect()
    }

    /// The traces with an event matching every filter of `query`, newest first (by their
    /// first matching record), at most `query.limit`.
    pub async fn search_traces(&self, query: &TraceQuery) -> Result<Vec<TraceMatch>, StoreError> {
        let mut select = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT trace_id, MIN(seq) AS first FROM audit_search WHERE 1 = 1",
        );
        for (column, value) in [
            ("agent", &query.agent),
            ("server", &query.server),
            ("target", &query.tool),
            ("session_id", &query.session),
            ("decision", &query.decision),
        ] {
            if let Some(value) = value {
                select
                    .push(format!(" AND {column} = "))
                    .push_bind(value.as_str());
            }
        }
        if let Some(since) = query.since_ms {
            select.push(" AND time_ms >= ").push_bind(since);
        }
        if let Some(until) = query.until_ms {
            select.push(" AND time_ms < ").push_bind(until);
        }
        select.push(" GROUP BY trace_id");
        if let Some(before) = query.before_seq {
            select.push(" HAVING MIN(seq) < ").push_bind(before);
        }
        select
            .push(" ORDER BY first DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let mut tx = self.pool.begin().await?;
        let found: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut *tx).await?;
        if found.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut rows = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT trace_id, agent, server, method, target, session_id, decision \
             FROM audit_search WHERE trace_id IN (",
        );
        let mut ids = rows.separated(", ");
        for (trace_id, _) in &found {
            ids.push_bind(trace_id.as_str());
        }
        rows.push(") ORDER BY seq");
        let rows: Vec<SearchRow> = rows.build_query_as().fetch_all(&mut *tx).await?;
        // Every record of the traces, not only the searched ones: their number and time span.
        let mut spans = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT trace_id, COUNT(*), MIN(time_ms), MAX(time_ms) FROM audit_records \
             WHERE trace_id IN (",
        );
        let mut ids = spans.separated(", ");
        for (trace_id, _) in &found {
            ids.push_bind(trace_id.as_str());
        }
        spans.push(") GROUP BY trace_id");
        let spans: Vec<(String, i64, i64, i64)> =
            spans.build_query_as().fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        let mut matches: Vec<TraceMatch> = found
            .iter()
            .map(|(trace_id, first)| TraceMatch {
                trace_id: trace_id.clone(),
                first_seq: u64::try_from(*first).unwrap_or(0),
                ..TraceMatch::default()
            })
            .collect();
        for (trace_id, events, start, end) in spans {
            if let Some(found) = matches.iter_mut().find(|m| m.trace_id == trace_id) {
                found.events = u64::try_from(events).unwrap_or(0);
                found.start_ms = start;
                found.end_ms = end;
            }
        }
        for row in rows {
            let Some(found) = matches.iter_mut().find(|m| m.trace_id == row.trace_id) else {
                continue;
            };
            if found.server.is_none() {
                found.agent = row.agent;
                found.server = row.server;
                found.method = row.method;
                found.tool = row.target;
                found.session_id = row.session_id;
            }
            // A trace with a denied call is a denied trace.
            if row.decision.is_some() && found.decision.as_deref() != Some("deny") {
                found.decision = row.decision;
            }
        }
        Ok(matches)
    }

    /// Size and head hash of the log as stored (not verified).
    pub async fn head(&self) -> Result<ChainHead, StoreError> {
        let head: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        match head {
            None => Ok(ChainHead {
                size: 0,
                head_hash: GENESIS_PREV_HASH,
            }),
            Some((seq, hash)) => Ok(ChainHead {
                size: stored_seq(seq)?,
                head_hash: stored_hash(seq, "hash", &hash)?,
            }),
        }
    }

    /// Writes the records `from..=to` (to the end of the log when `to` is `None`) as export
    /// lines to `out`, from one read snapshot: the header, the prefix when `from > 1`, each
    /// record followed by the checkpoints of its size, then the first checkpoint past the range
    /// with its consistency proof. With `proofs`, each record carries its inclusion proof in the
    /// first checkpoint that covers it. Stops quietly when `out` is closed.
    pub async fn export(
        &self,
        from: u64,
        to: Option<u64>,
        proofs: bool,
        out: &tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let log_size: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_records")
            .fetch_one(&mut *tx)
            .await?;
        let log_size = u64::try_from(log_size.unwrap_or(0)).unwrap_or(0);
        let to = to.unwrap_or(log_size);
        if from == 0 || to > log_size || to + 1 < from {
            return Err(StoreError::BadRange(format!(
                "records {from}..={to} are not in a log of {log_size} (seqs start at 1)"
            )));
        }
        let checkpoints: Vec<(i64, String)> = sqlx::query_as(
            "SELECT size, note FROM audit_checkpoints WHERE size >= ? ORDER BY size",
        )
        .bind(i64::try_from(from - 1).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let checkpoints: Vec<(u64, String)> = checkpoints
            .into_iter()
            .map(|(size, note)| (u64::try_from(size).unwrap_or(0), note))
            .collect();
        // A reader that stops reading for EXPORT_STALL ends the export: it holds a read
        // transaction and a pooled connection the sink needs.
        let send = |line: ExportLine| async move {
            matches!(
                tokio::time::timeout(EXPORT_STALL, out.send(line.to_ndjson())).await,
                Ok(Ok(()))
            )
        };
        let header = ExportLine::Header {
            format: crate::export::FORMAT.to_owned(),
            from,
            to,
            log_size,
        };
        if !send(header).await {
            return Ok(());
        }
        let mut pending = checkpoints.iter().peekable();
        if from > 1 {
            let before = from - 1;
            let head: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_records WHERE seq = ?")
                .bind(i64::try_from(before).unwrap_or(i64::MAX))
                .fetch_one(&mut *tx)
                .await?;
            let frontier = load_frontier(&mut tx, before).await?;
            let prefix = ExportLine::Prefix {
                size: before,
                head_hash: hex::encode(head),
                frontier: hex_hashes(frontier.nodes()),
            };
            if !send(prefix).await {
                return Ok(());
            }
            while let Some((_, note)) = pending.next_if(|(size, _)| *size == before) {
                if !send(ExportLine::Checkpoint { note: note.clone() }).await {
                    return Ok(());
                }
            }
        }
        let mut after_seq = i64::try_from(from - 1).unwrap_or(i64::MAX);
        let last = i64::try_from(to).unwrap_or(i64::MAX);
        while after_seq < last {
            let rows: Vec<TraceRow> = sqlx::query_as(
                "SELECT seq, body, prev_hash, hash FROM audit_records \
                 WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            )
            .bind(after_seq)
            .bind(last)
            .bind(VERIFY_PAGE_ROWS)
            .fetch_all(&mut *tx)
            .await?;
            let Some(page_last) = rows.last() else {
                break;
            };
            after_seq = page_last.seq;
            for TraceRow {
                seq,
                body,
                prev_hash,
                hash,
            } in rows
            {
                let seq = stored_seq(seq)?;
                let covering = checkpoints
                    .iter()
                    .map(|(size, _)| *size)
                    .find(|size| *size >= seq);
                let inclusion = match covering.filter(|_| proofs) {
                    Some(size) => with_nodes_in(&mut tx, size, |root| {
                        merkle::inclusion_proof(seq - 1, size, root)
                    })
                    .await?
                    .map(|proof| Inclusion {
                        size,
                        proof: hex_hashes(&proof),
                    }),
                    None => None,
                };
                let record = ExportLine::Record {
                    seq,
                    prev_hash: hex::encode(prev_hash),
                    hash: hex::encode(hash),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    inclusion,
                };
                if !send(record).await {
                    return Ok(());
                }
                while let Some((_, note)) = pending.next_if(|(size, _)| *size == seq) {
                    if !send(ExportLine::Checkpoint { note: note.clone() }).await {
                        return Ok(());
                    }
                }
            }
        }
        // Checkpoints the range skipped over (sizes without their record: never written by the
        // sink) stay out; the first past the range is joined to it by a consistency proof.
        if let Some((size, note)) = pending.find(|(size, _)| *size > to)
            && to > 0
        {
            tx.rollback().await?;
            let proof =
                self.consistency_proof(to, *size)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        seq: i64::try_from(to).unwrap_or(i64::MAX),
                        what: format!("no consistency proof from {to} to {size}"),
                    })?;
            let consistency = ExportLine::Consistency {
                from: to,
                to: *size,
                proof: hex_hashes(&proof),
            };
            if send(consistency).await {
                send(ExportLine::Checkpoint { note: note.clone() }).await;
            }
        }
        Ok(())
    }

    /// Verify the whole log with `verifier` (which holds the keys and any kept checkpoints):
    /// every record in seq order, page by page inside one read transaction (a consistent
    /// snapshot even while the sink appends); the tree nodes stored for them; the stored
    /// checkpoints, oldest first; and no tree leaf beyond the last record.
    pub async fn verify(&self, mut verifier: LogVerifier) -> Result<VerifyOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let notes: Vec<String> =
            sqlx::query_scalar("SELECT note FROM audit_checkpoints ORDER BY size")
                .fetch_all(&mut *tx)
                .await?;
        for note in &notes {
            if let Err(failure) = verifier.log_checkpoint(note) {
                return Ok(VerifyOutcome::Broken(failure));
            }
        }
        // Keyset pagination on the stored seq (not the expected one), so gaps are seen, not skipped.
        let mut after_seq = i64::MIN;
        loop {
            let rows: Vec<RecordRow> = sqlx::query_as(
                "SELECT seq, event_id, trace_id, kind, time_ms, body, prev_hash, hash \
                 FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(after_seq)
            .bind(VERIFY_PAGE_ROWS)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after_seq = last.seq;
            let start = verifier.size();
            // Every record's tree nodes are stored with it (or when the sink opens a log from
            // before the tree): one missing is a tree taken away.
            let stored = completed_nodes(&mut tx, start, start + rows.len() as u64).await?;
            for row in rows {
                let completed = match verifier.append(&StoredRecord::from(row)) {
                    Ok(completed) => completed,
                    Err(failure) => return Ok(VerifyOutcome::Broken(failure)),
                };
                for (id, computed) in completed {
                    let found = stored.get(&id);
                    if found != Some(&computed) {
                        let (first, last) = node_records(id);
                        return Ok(VerifyOutcome::Broken(Failure::TreeNode {
                            level: id.0,
                            index: id.1,
                            first,
                            last,
                            stored: found.map_or_else(|| "missing".to_owned(), hex::encode),
                            computed: hex::encode(computed),
                        }));
                    }
                }
                if let Err(failure) = verifier.settle() {
                    return Ok(VerifyOutcome::Broken(failure));
                }
            }
        }
        let size = verifier.size();
        let beyond: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(idx) FROM audit_tree_nodes WHERE level = 0 AND idx >= ?",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await?;
        tx.rollback().await?;
        if let Some(index) = beyond {
            return Ok(VerifyOutcome::Broken(Failure::TreeBeyondLog {
                seq: u64::try_from(index).unwrap_or(0) + 1,
                size,
            }));
        }
        Ok(match verifier.finish() {
            Ok(summary) => VerifyOutcome::Intact(summary),
            Err(failure) => VerifyOutcome::Broken(failure),
        })
    }
}

/// [`AuditStore::with_nodes`] inside a transaction already open.
async fn with_nodes_in<T>(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    size: u64,
    build: impl Fn(&dyn Fn(u64, u64) -> Option<merkle::Hash>) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    let wanted = std::cell::RefCell::new(Vec::new());
    // A placeholder hash for every range: only the ranges asked for matter here.
    let _ = build(&|start, end| {
        merkle::range_nodes(start, end, &mut wanted.borrow_mut());
        Some([0; 32])
    });
    let mut wanted = wanted.into_inner();
    wanted.sort_unstable();
    wanted.dedup();
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(idx) FROM audit_tree_nodes WHERE level = 0")
            .fetch_one(&mut **tx)
            .await?;
    let leaves = last.map_or(0, |last| u64::try_from(last).unwrap_or(0) + 1);
    if size > leaves {
        return Ok(None);
    }
    let nodes = load_nodes(tx, &wanted).await?;
    let node = |level: u32, index: u64| nodes.get(&(level, index)).copied();
    Ok(build(&|start, end| {
        merkle::range_root_with(start, end, &node)
    }))
}

/// The stored nodes that the leaves `start..end` complete: at each level, those whose last leaf
/// is among them.
async fn completed_nodes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    start: u64,
    end: u64,
) -> Result<HashMap<NodeId, merkle::Hash>, StoreError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT level, idx, hash FROM audit_tree_nodes WHERE ",
    );
    let mut any = false;
    for level in 0..u64::BITS {
        let (low, high) = (start >> level, end >> level);
        if high <= low {
            continue;
        }
        if any {
            query.push(" OR ");
        }
        any = true;
        query
            .push("(level = ")
            .push_bind(i64::from(level))
            .push(" AND idx >= ")
            .push_bind(i64::try_from(low).unwrap_or(i64::MAX))
            .push(" AND idx < ")
            .push_bind(i64::try_from(high).unwrap_or(i64::MAX))
            .push(")");
    }
    if !any {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, i64, Vec<u8>)> = query.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(level, index, hash)| {
            Some((
                (u32::try_from(level).ok()?, u64::try_from(index).ok()?),
                merkle::Hash::try_from(hash).ok()?,
            ))
        })
        .collect())
}

/// Search rows for the records after the last one searched, from their bodies: the rows the
/// append path writes (see `append_batch`), with what [`search_target`] and [`search_decision`]
/// take from an event, in SQL.
const FILL_SEARCH: &str = "INSERT INTO audit_search \
    (seq, trace_id, time_ms, kind, agent, server, method, target, session_id, decision) \
    SELECT seq, trace_id, time_ms, kind, json_extract(b, '$.agent'), \
        json_extract(b, '$.request.server'), json_extract(b, '$.request.method'), \
        COALESCE(json_extract(b, '$.request.tool'), json_extract(b, '$.request.promptName'), \
            json_extract(b, '$.request.resourceUri')), \
        json_extract(b, '$.request.sessionId'), \
        CASE WHEN kind = 'decision' THEN \
            CASE json_extract(b, '$.detail.allow') WHEN 1 THEN 'allow' WHEN 0 THEN 'deny' END END \
    FROM (SELECT seq, trace_id, time_ms, kind, CAST(body AS TEXT) AS b FROM audit_records r \
        WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_search) AND kind <> 'intent' \
        AND NOT (kind = 'outcome' AND EXISTS (SELECT 1 FROM audit_records d WHERE d.event_id = \
            r.trace_id || '-' || json_extract(CAST(r.body AS TEXT), '$.spanId') || '-decision')))";

/// The event id of the decision of `event`'s call (`{traceId}-{spanId}-decision`).
fn decision_id(event: &AuditEvent) -> String {
    format!("{}-{}-decision", event.trace_id, event.span_id)
}

/// The decision ids, among those of the outcomes in `rows`, that the log holds (the batch's
/// own records are already inserted).
async fn decided_spans(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    rows: &[(i64, &IngestEvent, ChainHash, ChainHash)],
) -> Result<HashSet<String>, StoreError> {
    let wanted: Vec<String> = rows
        .iter()
        .filter(|(_, item, _, _)| item.event.kind == AuditKind::Outcome)
        .map(|(_, item, _, _)| decision_id(&item.event))
        .collect();
    let ids: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let found = stored_ids(tx, &ids).await?;
    Ok(found.into_iter().map(str::to_owned).collect())
}

/// What a call names: its tool, or the prompt or resource it asks for.
fn search_target(request: &RequestFacts) -> Option<&str> {
    request
        .tool
        .as_deref()
        .or(request.prompt_name.as_deref())
        .or(request.resource_uri.as_deref())
}

/// `allow` or `deny` for a decision record.
fn search_decision(event: &AuditEvent) -> Option<&'static str> {
    if event.kind != AuditKind::Decision {
        return None;
    }
    match event
        .detail
        .get("allow")
        .and_then(serde_json::Value::as_bool)
    {
        Some(true) => Some("allow"),
        Some(false) => Some("deny"),
        None => None,
    }
}

/// The stored nodes among `ids`.
async fn load_nodes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, merkle::Hash>, StoreError> {
    let mut nodes = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(NODE_CHUNK_ROWS) {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT level, idx, hash FROM audit_tree_nodes WHERE (level, idx) IN (VALUES ",
        );
        let mut values = query.separated(", ");
        for (level, index) in chunk {
            values
                .push("(")
                .push_bind_unseparated(i64::from(*level))
                .push_unseparated(", ")
                .push_bind_unseparated(i64::try_from(*index).unwrap_or(i64::MAX))
                .push_unseparated(")");
        }
        query.push(")");
        let rows: Vec<(i64, i64, Vec<u8>)> = query.build_query_as().fetch_all(&mut **tx).await?;
        for (level, index, hash) in rows {
            let hash: merkle::Hash = hash.try_into().map_err(|_| StoreError::Corrupt {
                seq: index.saturating_add(1),
                what: format!("tree node ({level}, {index}) is not 32 bytes"),
            })?;
            nodes.insert(
                (
                    u32::try_from(level).unwrap_or(u32::MAX),
                    u64::try_from(index).unwrap_or(u64::MAX),
                ),
                hash,
            );
        }
    }
    Ok(nodes)
}

/// Adds the leaves of the records after the tree's last leaf up to `size` (a log written before
/// the tree, or by an older sink), so that the tree covers the first `size` records.
async fn fill_tree(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    size: i64,
) -> Result<(), StoreError> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(idx) FROM audit_tree_nodes WHERE level = 0")
            .fetch_one(&mut **tx)
            .await?;
    let mut covered = last.map_or(0, |last| last + 1);
    while covered < size {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, body FROM audit_records WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        )
        .bind(covered)
        .bind(size)
        .bind(VERIFY_PAGE_ROWS)
        .fetch_all(&mut **tx)
        .await?;
        let Some((last_seq, _)) = rows.last() else {
            break;
        };
        let last_seq = *last_seq;
        if let Some((seq, _)) = rows
            .iter()
            .enumerate()
            .find(|(i, (seq, _))| *seq != covered + 1 + i64::try_from(*i).unwrap_or(i64::MAX))
            .map(|(_, row)| row)
        {
            return Err(StoreError::Corrupt {
                seq: *seq,
                what: "a record is missing before it: the tree cannot cover the log".into(),
            });
        }
        let leaves: Vec<merkle::Hash> = rows
            .iter()
            .map(|(_, body)| merkle::leaf_hash(body))
            .collect();
        append_leaves(tx, u64::try_from(covered).unwrap_or(0), &leaves).await?;
        covered = last_seq;
    }
    Ok(())
}

/// Stores `leaves` as the leaves from index `first` and every subtree they complete, reading
/// the frontier they join from the database.
async fn append_leaves(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    first: u64,
    leaves: &[merkle::Hash],
) -> Result<(), StoreError> {
    if leaves.is_empty() {
        return Ok(());
    }
    let known = load_frontier(tx, first).await?;
    let (made, _) = grow_tree(known, leaves);
    insert_nodes(tx, &made).await
}

/// The frontier of the tree of the first `size` records, read from the stored nodes.
async fn load_frontier(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    size: u64,
) -> Result<Frontier, StoreError> {
    let ids = Frontier::ids(size);
    let nodes = load_nodes(tx, &ids).await?;
    let hashes = ids
        .iter()
        .map(|id| {
            nodes.get(id).copied().ok_or_else(|| StoreError::Corrupt {
                seq: i64::try_from(size).unwrap_or(i64::MAX),
                what: format!("tree node {id:?} the next record joins is missing"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_nodes(size, hashes).ok_or_else(|| StoreError::Corrupt {
        seq: i64::try_from(size).unwrap_or(i64::MAX),
        what: "the tree's frontier does not fit its size".into(),
    })
}

/// The nodes that `leaves` add to the tree of `frontier`, and the grown tree's frontier.
fn grow_tree(
    mut frontier: Frontier,
    leaves: &[merkle::Hash],
) -> (Vec<(NodeId, merkle::Hash)>, Frontier) {
    let mut made = Vec::with_capacity(leaves.len() * 2);
    for leaf in leaves {
        frontier.push(*leaf, |id, hash| made.push((id, *hash)));
    }
    (made, frontier)
}

/// Inserts tree nodes, a multi-row statement per [`NODE_CHUNK_ROWS`].
async fn insert_nodes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    made: &[(NodeId, merkle::Hash)],
) -> Result<(), StoreError> {
    for chunk in made.chunks(NODE_CHUNK_ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_tree_nodes (level, idx, hash) ",
        );
        insert.push_values(chunk, |mut row, ((level, index), hash)| {
            row.push_bind(i64::from(*level))
                .push_bind(i64::try_from(*index).unwrap_or(i64::MAX))
                .push_bind(hash.to_vec());
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The ids among `ids` the log holds, one query per [`INSERT_CHUNK_ROWS`].
async fn stored_ids<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &[&'a str],
) -> Result<HashSet<&'a str>, StoreError> {
    let mut stored = HashSet::new();
    for chunk in ids.chunks(INSERT_CHUNK_ROWS) {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT event_id FROM audit_records WHERE event_id IN (",
        );
        let mut bound = query.separated(", ");
        for id in chunk {
            bound.push_bind(*id);
        }
        query.push(")");
        let found: HashSet<String> = query
            .build_query_scalar()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        stored.extend(chunk.iter().copied().filter(|id| found.contains(*id)));
    }
    Ok(stored)
}

/// A row as read for trace lookup and export.
#[derive(sqlx::FromRow)]
struct TraceRow {
    seq: i64,
    body: Vec<u8>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// A full row as read for verification (columns named as in the table).
#[derive(sqlx::FromRow)]
struct RecordRow {
    seq: i64,
    event_id: String,
    trace_id: String,
    kind: String,
    time_ms: i64,
    body: Vec<u8>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl From<RecordRow> for StoredRecord {
    fn from(row: RecordRow) -> Self {
        StoredRecord {
            seq: row.seq,
            event_id: row.event_id,
            trace_id: row.trace_id,
            kind: row.kind,
            time_ms: row.time_ms,
            body: row.body,
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

/// Open `path` read-only and verify it with `verifier`.
pub async fn verify_database(
    path: &Path,
    verifier: LogVerifier,
) -> Result<VerifyOutcome, StoreError> {
    let store = AuditStore::open_read_only(path).await?;
    let outcome = store.verify(verifier).await;
    store.close().await;
    outcome
}

fn stored_seq(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        seq,
        what: "seq is negative".to_owned(),
    })
}

fn stored_hash(seq: i64, column: &str, bytes: &[u8]) -> Result<ChainHash, StoreError> {
    ChainHash::try_from(bytes).map_err(|_| StoreError::Corrupt {
        seq,
        what: format!("{column} has {} bytes, not 32", bytes.len()),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|elapsed| i64::try_from(elapsed.as_millis()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::sample_event;
    use crate::ingest::parse_batch;
    use behavry_core::wire::AuditKind;
    use sqlx::Connection;
    use sqlx::sqlite::SqliteConnection;

    fn batch(events: &[AuditEvent]) -> Vec<IngestEvent> {
        let body: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        parse_batch(body.as_bytes()).unwrap()
    }

    fn five_events() -> Vec<AuditEvent> {
        (1..=5)
            .map(|t| sample_event(t, AuditKind::Intent))
            .collect()
    }

    /// A log of five records in a temp dir, closed so the file is all there is.
    async fn closed_log() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = AuditStore::open(&path).await.unwrap();
        let ack = store.append_batch(&batch(&five_events())).await.unwrap();
        assert_eq!(ack.appended, 5);
        store.close().await;
        (dir, path)
    }

    fn intact_size(outcome: VerifyOutcome) -> u64 {
        match outcome {
            VerifyOutcome::Intact(summary) => summary.head.size,
            VerifyOutcome::Broken(broken) => panic!("{broken}"),
        }
    }

    /// Every stored body's leaf hash, in seq order.
    async fn stored_leaves(store: &AuditStore) -> Vec<merkle::Hash> {
        let bodies: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT body FROM audit_records ORDER BY seq")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        bodies.iter().map(|b| merkle::leaf_hash(b)).collect()
    }

    /// The store's heads and proofs agree with the tree built in memory from its bodies, for
    /// every size and record.
    async fn assert_tree_matches(store: &AuditStore) {
        let leaves = stored_leaves(store).await;
        let tree = merkle::Leaves(&leaves);
        let n = tree.size();
        assert_eq!(store.tree_head(n + 1).await.unwrap(), None);
        for size in 0..=n {
            let head = store.tree_head(size).await.unwrap().unwrap();
            assert_eq!(
                head,
                merkle::Leaves(&leaves[..size as usize]).root(),
                "size {size}"
            );
            for seq in 1..=size {
                let proof = store.inclusion_proof(seq, size).await.unwrap().unwrap();
                let leaf = &leaves[(seq - 1) as usize];
                assert!(merkle::verify_inclusion(leaf, seq - 1, size, &proof, &head));
            }
            if size > 0 {
                let old = size.div_ceil(2);
                let old_head = store.tree_head(old).await.unwrap().unwrap();
                let proof = store.consistency_proof(old, size).await.unwrap().unwrap();
                assert!(merkle::verify_consistency(
                    old, size, &old_head, &head, &proof
                ));
            }
        }
        assert_eq!(store.inclusion_proof(0, n).await.unwrap(), None);
        assert_eq!(store.inclusion_proof(n + 1, n + 1).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_merkle_tree_grows_with_every_batch_and_proves_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        assert_eq!(
            store.tree_head(0).await.unwrap(),
            Some(merkle::empty_root())
        );
        // Batches of odd sizes, with duplicates, so subtrees complete across batch boundaries.
        let numbered = |n: usize| {
            let mut event = sample_event(1, AuditKind::Intent);
            event.event_id = format!("event-{n}");
            event
        };
        for (from, to) in [(0, 3), (2, 7), (7, 8), (8, 21)] {
            let events: Vec<AuditEvent> = (from..to).map(numbered).collect();
            store.append_batch(&batch(&events)).await.unwrap();
        }
        assert_eq!(stored_leaves(&store).await.len(), 21);
        assert_tree_matches(&store).await;
    }

    #[tokio::test]
    async fn checkpoints_are_signed_only_over_a_history_that_extends_the_last() {
        use crate::checkpoint::{NoteSigner, NoteVerifier};
        let (_dir, path) = closed_log().await;
        let store = AuditStore::open(&path).await.unwrap();
        let signer = NoteSigner::new(
            "behavry.test/audit",
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        let first = store
            .sign_checkpoint(&signer, "behavry.test/audit")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.size, 5);
        assert_eq!(Some(first.root), store.tree_head(5).await.unwrap());
        let note = store.latest_checkpoint().await.unwrap().unwrap();
        assert_eq!(verifier.open_checkpoint(&note).unwrap(), first);
        // Nothing new: nothing signed.
        assert!(
            store
                .sign_checkpoint(&signer, "behavry.test/audit")
                .await
                .unwrap()
                .is_none()
        );
        // More records: a newer checkpoint that a consistency proof ties to the first.
        store
            .append_batch(&batch(&[
                sample_event(9, AuditKind::Outcome),
                sample_event(10, AuditKind::Intent),
            ]))
            .await
            .unwrap();
        let second = store
            .sign_checkpoint(&signer, "behavry.test/audit")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.size, 7);
        let proof = store.consistency_proof(5, 7).await.unwrap().unwrap();
        assert!(merkle::verify_consistency(
            5,
            7,
            &first.root,
            &second.root,
            &proof
        ));
        // A tree rewritten under the first checkpoint is not signed again.
        store.close().await;
        let options = SqliteConnectOptions::new().filename(&path);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        for statement in [
            "DROP TRIGGER audit_tree_nodes_no_update",
            "UPDATE audit_tree_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        let store = AuditStore::open(&path).await.unwrap();
        store
            .append_batch(&batch(&[sample_event(11, AuditKind::Intent)]))
            .await
            .unwrap();
        let refused = store
            .sign_checkpoint(&signer, "behavry.test/audit")
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Forked { size: 7 }),
            "{refused}"
        );
        assert_eq!(
            store.latest_checkpoint().await.unwrap().unwrap(),
            signer.sign(&second.body()).unwrap()
        );
    }

    #[tokio::test]
    async fn a_log_written_before_the_tree_gets_its_nodes_when_opened() {
        let (_dir, path) = closed_log().await;
        // As an older sink left it: records without tree nodes.
        let options = SqliteConnectOptions::new().filename(&path);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        for statement in [
            "DROP TRIGGER audit_tree_nodes_no_delete",
            "DELETE FROM audit_tree_nodes",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        let store = AuditStore::open(&path).await.unwrap();
        assert_tree_matches(&store).await;
        // And it keeps growing from there.
        store
            .append_batch(&batch(&[sample_event(9, AuditKind::Outcome)]))
            .await
            .unwrap();
        assert_tree_matches(&store).await;
    }

    #[tokio::test]
    async fn append_then_resend_counts_duplicates_and_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let events = five_events();
        let first = store.append_batch(&batch(&events)).await.unwrap();
        assert_eq!(
            first,
            IngestAck {
                appended: 5,
                duplicates: 0
            }
        );
        let head = store.head().await.unwrap();

        let again = store.append_batch(&batch(&events)).await.unwrap();
        assert_eq!(
            again,
            IngestAck {
                appended: 0,
                duplicates: 5
            }
        );
        assert_eq!(store.head().await.unwrap(), head);

        // A repeat inside one batch is a duplicate too.
        let new = sample_event(9, AuditKind::Outcome);
        let mixed = store
            .append_batch(&batch(&[new.clone(), events[0].clone(), new]))
            .await
            .unwrap();
        assert_eq!(
            mixed,
            IngestAck {
                appended: 1,
                duplicates: 2
            }
        );
        assert_eq!(
            intact_size(store.verify(LogVerifier::new(Vec::new())).await.unwrap()),
            6
        );
    }

    #[tokio::test]
    async fn batches_larger_than_one_statement_append_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let numbered = |n: usize| {
            let mut event = sample_event(1, AuditKind::Intent);
            event.event_id = format!("event-{n}");
            event
        };
        let first: Vec<AuditEvent> = (0..INSERT_CHUNK_ROWS * 2 + 1).map(numbered).collect();
        let ack = store.append_batch(&batch(&first)).await.unwrap();
        assert_eq!(ack.appended, first.len() as u64);
        // Resent with new events among them, across chunk boundaries: only the new ones count.
        let second: Vec<AuditEvent> = (INSERT_CHUNK_ROWS..INSERT_CHUNK_ROWS * 3 + 7)
            .map(numbered)
            .collect();
        let ack = store.append_batch(&batch(&second)).await.unwrap();
        let new = second.len() - (first.len() - INSERT_CHUNK_ROWS);
        assert_eq!(
            ack,
            IngestAck {
                appended: new as u64,
                duplicates: (second.len() - new) as u64
            }
        );
        assert_eq!(
            intact_size(store.verify(LogVerifier::new(Vec::new())).await.unwrap()),
            (first.len() + new) as u64
        );
        let last = store.trace(&first[0].trace_id).await.unwrap();
        let seqs: Vec<u64> = last.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=(first.len() + new) as u64).collect::<Vec<_>>());
        assert_eq!(
            last.last().unwrap().event.event_id,
            format!("event-{}", INSERT_CHUNK_ROWS * 3 + 6)
        );
    }

    #[tokio::test]
    async fn trace_lists_its_events_in_seq_order_and_chains_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let intent = sample_event(1, AuditKind::Intent);
        let decision = sample_event(1, AuditKind::Decision);
        let outcome = sample_event(1, AuditKind::Outcome);
        let other = sample_event(2, AuditKind::Intent);
        store
            .append_batch(&batch(&[intent.clone(), other, decision.clone()]))
            .await
            .unwrap();
        store
            .append_batch(&batch(std::slice::from_ref(&outcome)))
            .await
            .unwrap();

        let records = store.trace(&intent.trace_id).await.unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 3, 4]);
        let events: Vec<AuditEvent> = records.iter().map(|r| r.event.clone()).collect();
        assert_eq!(events, [intent, decision, outcome]);
        assert_eq!(records[0].prev_hash, GENESIS_PREV_HASH);
        assert!(store.trace(&"a".repeat(32)).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_from_two_stores_on_one_file_stay_gapless() {
        // Two stores = two independent pools and write locks, as two processes would have: only
        // BEGIN IMMEDIATE keeps them from reading the same head.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let left = AuditStore::open(&path).await.unwrap();
        let right = AuditStore::open(&path).await.unwrap();
        let left_events: Vec<_> = (1..=40)
            .map(|t| sample_event(t, AuditKind::Intent))
            .collect();
        let right_events: Vec<_> = (41..=80)
            .map(|t| sample_event(t, AuditKind::Intent))
            .collect();
        let left_tasks = (0..4).map(|chunk| {
            let store = left.clone();
            let part = batch(&left_events[chunk * 10..chunk * 10 + 10]);
            tokio::spawn(async move { store.append_batch(&part).await })
        });
        let right_tasks = (0..4).map(|chunk| {
            let store = right.clone();
            let part = batch(&right_events[chunk * 10..chunk * 10 + 10]);
            tokio::spawn(async move { store.append_batch(&part).await })
        });
        let tasks: Vec<_> = left_tasks.chain(right_tasks).collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().appended, 10);
        }
        assert_eq!(
            intact_size(left.verify(LogVerifier::new(Vec::new())).await.unwrap()),
            80
        );
        // Each store's frontier went stale whenever the other appended: the tree is still right,
        // and so is the next batch of each.
        assert_tree_matches(&left).await;
        left.append_batch(&batch(&[sample_event(81, AuditKind::Intent)]))
            .await
            .unwrap();
        right
            .append_batch(&batch(&[sample_event(82, AuditKind::Intent)]))
            .await
            .unwrap();
        assert_tree_matches(&right).await;
    }

    #[tokio::test]
    async fn a_full_database_acknowledges_nothing_it_did_not_store() {
        // SQLite's page cap gives the error a full disk gives (SQLITE_FULL) on a real file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = AuditStore::open_with(&path, |o| o.pragma("max_page_count", "60"))
            .await
            .unwrap();
        let mut stored = 0u64;
        let mut refused = None;
        for round in 0..200u64 {
            let events: Vec<AuditEvent> = (0..20)
                .map(|n| {
                    let mut event = sample_event(1, AuditKind::Decision);
                    event.event_id = format!("event-{round}-{n}");
                    event
                })
                .collect();
            match store.append_batch(&batch(&events)).await {
                Ok(ack) => stored += ack.appended,
                Err(err) => {
                    refused = Some(err);
                    break;
                }
            }
        }
        let refused = refused.expect("the capped database never filled");
        assert!(matches!(refused, StoreError::Database(_)), "{refused}");
        assert!(refused.to_string().contains("full"), "{refused}");
        // Only acknowledged batches are in the log, and it verifies.
        assert_eq!(store.head().await.unwrap().size, stored);
        store.close().await;
        let store = AuditStore::open(&path).await.unwrap();
        assert_eq!(
            intact_size(store.verify(LogVerifier::new(Vec::new())).await.unwrap()),
            stored
        );
        // With room again, the refused batch goes in whole.
        let ack = store
            .append_batch(&batch(&[sample_event(2, AuditKind::Intent)]))
            .await
            .unwrap();
        assert_eq!(ack.appended, 1);
        let leaves = stored_leaves(&store).await;
        assert_eq!(
            store.tree_head(stored + 1).await.unwrap(),
            Some(merkle::Leaves(&leaves).root())
        );
    }

    #[tokio::test]
    async fn guard_triggers_refuse_update_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        store.append_batch(&batch(&five_events())).await.unwrap();
        let update = sqlx::query("UPDATE audit_records SET kind = 'outcome' WHERE seq = 1")
            .execute(&store.pool)
            .await
            .unwrap_err();
        assert!(update.to_string().contains("append-only"), "{update}");
        let delete = sqlx::query("DELETE FROM audit_records")
            .execute(&store.pool)
            .await
            .unwrap_err();
        assert!(delete.to_string().contains("append-only"), "{delete}");
    }

    #[tokio::test]
    async fn intact_file_verifies_read_only() {
        let (_dir, path) = closed_log().await;
        let outcome = verify_database(&path, LogVerifier::new(Vec::new()))
            .await
            .unwrap();
        assert_eq!(intact_size(outcome), 5);
    }

    #[tokio::test]
    async fn missing_file_is_an_error_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let err = verify_database(&path, LogVerifier::new(Vec::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing(_)), "{err}");
        assert!(!path.exists());
    }

    /// Durable appends per second, in batches of the sizes the filter ships, for
    /// docs/performance.md: `cargo test -p behavry-audit --release store::tests::append_throughput
    /// -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, prints numbers"]
    async fn append_throughput() {
        for batch_size in [1_usize, 30, 500] {
            let dir = tempfile::tempdir().unwrap();
            let store = AuditStore::open(&dir.path().join("audit.db"))
                .await
                .unwrap();
            let total = 30_000_usize.min(batch_size * 2_000);
            let events: Vec<IngestEvent> = (0..total)
                .map(|n| {
                    let mut event = sample_event(1, AuditKind::Decision);
                    event.event_id = format!("event-{n}");
                    batch(std::slice::from_ref(&event)).remove(0)
                })
                .collect();
            let started = std::time::Instant::now();
            for chunk in events.chunks(batch_size) {
                store.append_batch(chunk).await.unwrap();
            }
            let elapsed = started.elapsed();
            println!(
                "batches of {batch_size}: {:.0} events/s ({:.1} µs each), {} events",
                total as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64() * 1e6 / total as f64,
                total
            );
        }
    }

    /// Appends as the filter ships them to a log that grows: three events per call under a random
    /// trace id (so each call lands on random pages of the event-id and trace indexes), batches of
    /// 300, the rate per 50 000 events up to 300 000: `cargo test -p behavry-audit --release
    /// store::tests::append_throughput_growing_log -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, prints numbers"]
    async fn append_throughput_growing_log() {
        use sha2::Digest as _;
        const SEGMENT: usize = 50_000;
        const BATCH: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let kinds = [AuditKind::Intent, AuditKind::Decision, AuditKind::Outcome];
        for segment in 0..6 {
            let events: Vec<IngestEvent> = (segment * SEGMENT..(segment + 1) * SEGMENT)
                .map(|n| {
                    let call = n / 3;
                    let trace_id = hex::encode(&sha2::Sha256::digest(call.to_le_bytes())[..16]);
                    let mut event = sample_event(1, kinds[n % 3]);
                    event.event_id = format!("{trace_id}-00f067aa0ba902b7-{}", event.kind.as_str());
                    event.trace_id = trace_id;
                    batch(std::slice::from_ref(&event)).remove(0)
                })
                .collect();
            let cpu = process_cpu_seconds();
            let started = std::time::Instant::now();
            for chunk in events.chunks(BATCH) {
                store.append_batch(chunk).await.unwrap();
            }
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = process_cpu_seconds() - cpu;
            println!(
                "log {:>7} -> {:>7} events: {:.0} events/s, {:.1} µs of CPU per event",
                segment * SEGMENT,
                (segment + 1) * SEGMENT,
                SEGMENT as f64 / elapsed,
                cpu * 1e6 / SEGMENT as f64
            );
        }
    }

    /// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, counted in
    /// ticks of 10 ms; 0 elsewhere).
    /// Verification and proof speed at a million records (`BEHAVRY_BENCH_RECORDS` to change),
    /// for docs/performance.md: `cargo test -p behavry-audit --release
    /// store::tests::verify_and_proofs_at_scale -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, prints numbers"]
    async fn verify_and_proofs_at_scale() {
        const BATCH: usize = 1000;
        let records: u64 = std::env::var("BEHAVRY_BENCH_RECORDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = AuditStore::open(&path).await.unwrap();
        let started = std::time::Instant::now();
        let mut next = 0u64;
        while next < records {
            let events: Vec<AuditEvent> = (next..(next + BATCH as u64).min(records))
                .map(|n| {
                    let mut event = sample_event(1, AuditKind::Decision);
                    event.event_id = format!("event-{n}");
                    event
                })
                .collect();
            next += events.len() as u64;
            store.append_batch(&batch(&events)).await.unwrap();
        }
        println!(
            "built {records} records in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let signer = crate::checkpoint::NoteSigner::new(
            "behavry.bench/audit",
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap();
        store
            .sign_checkpoint(&signer, "behavry.bench/audit")
            .await
            .unwrap();
        let rounds = 200u64;
        let started = std::time::Instant::now();
        for i in 0..rounds {
            let seq = 1 + (i * 7919 * 1013) % records;
            store.inclusion_proof(seq, records).await.unwrap().unwrap();
        }
        println!(
            "inclusion proof at {records}: {:.0} µs each",
            started.elapsed().as_secs_f64() * 1e6 / rounds as f64
        );
        let started = std::time::Instant::now();
        for i in 0..rounds {
            let from = 1 + (i * 104_729) % (records - 1);
            store
                .consistency_proof(from, records)
                .await
                .unwrap()
                .unwrap();
        }
        println!(
            "consistency proof at {records}: {:.0} µs each",
            started.elapsed().as_secs_f64() * 1e6 / rounds as f64
        );
        store.close().await;
        for quick in [false, true] {
            let keys =
                vec![crate::checkpoint::NoteVerifier::parse(&signer.verifier_key()).unwrap()];
            let cpu = process_cpu_seconds();
            let started = std::time::Instant::now();
            let verifier = LogVerifier::new(keys).hashes_only(quick);
            let outcome = verify_database(&path, verifier).await.unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            assert_eq!(intact_size(outcome), records);
            println!(
                "verify{} (chain, tree, stored nodes, checkpoint): {:.0} records/s, {:.1} µs of CPU per record",
                if quick { " --quick" } else { "" },
                records as f64 / elapsed,
                (process_cpu_seconds() - cpu) * 1e6 / records as f64
            );
        }
    }

    fn process_cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }
}
