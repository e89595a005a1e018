//! Verification of a whole audit log, record by record in constant memory: the hash chain, the
//! Merkle tree recomputed from the records' bodies (RFC 9162 §2.1), and signed checkpoints, the
//! log's own and those a verifier kept. The store feeds it a database's rows (and compares the
//! tree nodes it keeps), [`crate::export`] an export's lines. It names the first bad record, or
//! the first records where the damage lies, for each kind of tampering:
//!
//! | tampering | seen as |
//! |---|---|
//! | a flipped byte | the record's chain hash ([`Failure::Chain`]) |
//! | a record deleted, inserted or moved | a seq gap or a `prevHash` that is not the previous hash |
//! | the above with every later hash recomputed | the tree a database keeps ([`Failure::TreeNode`]), else a signed root ([`Failure::Forked`]) |
//! | the tail cut off | a checkpoint beyond the log ([`Failure::Truncated`]), or tree leaves beyond it |
//! | a forked history | a signed root the records no longer hash to ([`Failure::Forked`]) |
//! | an old checkpoint replayed | the log's newest checkpoint older than one kept ([`Failure::Replayed`]) |

use std::collections::BTreeMap;
use std::fmt;

use behavry_core::merkle::{self, Frontier, Hash, NodeId};

use crate::chain::{BreakReason, ChainBreak, ChainHead, ChainVerifier, StoredRecord};
use crate::checkpoint::{Checkpoint, NoteVerifier, unverified_checkpoint};

/// Whose checkpoint it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Signed by the log and kept with it.
    Log,
    /// Kept by the verifier from an earlier look at the log.
    Kept,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Holder::Log => "log's",
            Holder::Kept => "kept",
        })
    }
}

/// Why a log fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// A record breaks the chain: altered, deleted, inserted or moved.
    #[error("record seq={} (event {}): {}", .0.seq, .0.event_id, .0.reason)]
    Chain(ChainBreak),
    /// A tree node the store keeps is not what the records hash to.
    #[error(
        "tree node (level {level}, index {index}) over records {first}..={last} is {stored} but the records hash to {computed} (records rewritten with their chain recomputed, or the tree altered)"
    )]
    TreeNode {
        /// Node level (0: a leaf).
        level: u32,
        /// Node index at its level.
        index: u64,
        /// First record under it.
        first: u64,
        /// Last record under it.
        last: u64,
        /// Hex of the stored hash, or `missing`.
        stored: String,
        /// Hex of the recomputed hash.
        computed: String,
    },
    /// The store's tree has leaves past the last record.
    #[error(
        "the tree has a leaf for record seq={seq} but the log ends at {size}: records from seq={seq} were removed (truncated tail)"
    )]
    TreeBeyondLog {
        /// First record the tree has and the log does not.
        seq: u64,
        /// The log's size.
        size: u64,
    },
    /// A checkpoint cannot be read, or no key given verifies it.
    #[error("the {holder} checkpoint {what}: {reason}")]
    BadCheckpoint {
        /// Whose.
        holder: Holder,
        /// Which (`of size N`, or `number K` when it cannot be read).
        what: String,
        /// Why.
        reason: String,
    },
    /// The records no longer hash to a signed root.
    #[error(
        "forked history: the {holder} checkpoint of size {size} signs root {signed} but records 1..={size} hash to {computed}; the first changed record is among seq={first}..={size}{matched}"
    )]
    Forked {
        /// Whose checkpoint.
        holder: Holder,
        /// Its size.
        size: u64,
        /// Hex of the signed root.
        signed: String,
        /// Hex of the recomputed root.
        computed: String,
        /// The first record that may have changed (one past the last size that matched).
        first: u64,
        /// Names the last matching checkpoint, when there was one.
        matched: String,
    },
    /// A checkpoint covers records the log does not have.
    #[error(
        "truncated tail: the {holder} checkpoint of size {size} covers records the log does not have; it ends at {log_size}, records from seq={} are missing",
        log_size + 1
    )]
    Truncated {
        /// Whose checkpoint.
        holder: Holder,
        /// Its size.
        size: u64,
        /// The log's size.
        log_size: u64,
    },
    /// The log presents a checkpoint older than one the verifier kept.
    #[error(
        "old checkpoint replayed: the log's newest checkpoint {newest} but the verifier kept one of size {kept}; records from seq={} are no longer covered by the log's checkpoints",
        .newest_size.map_or(1, |n| n + 1)
    )]
    Replayed {
        /// `has size N` or `is missing`.
        newest: String,
        /// The size of the log's newest checkpoint.
        newest_size: Option<u64>,
        /// The largest size kept.
        kept: u64,
    },
    /// A checkpoint past the records is not joined to them by its consistency proof.
    #[error(
        "forked history: records 1..={from} are not the start of the log's checkpoint of size {size} (its consistency proof fails); the first changed record is among seq={first}..={from}"
    )]
    NotExtended {
        /// The records checked.
        from: u64,
        /// The checkpoint's size.
        size: u64,
        /// The first record that may have changed.
        first: u64,
    },
    /// A record's inclusion proof does not lead to the checkpoint it names.
    #[error(
        "record seq={seq}: its inclusion proof does not lead to the root of the checkpoint of size {size}"
    )]
    Inclusion {
        /// The record.
        seq: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// An export ends before the last record its header names.
    #[error(
        "truncated export: the header promises records up to seq={to} but they end at {size}; records from seq={} are missing",
        size + 1
    )]
    RangeCut {
        /// The header's last seq.
        to: u64,
        /// The records present.
        size: u64,
    },
    /// Checkpoints, proofs or lines that do not fit where they stand.
    #[error("{0}")]
    Malformed(String),
}

impl Failure {
    /// The seq of the first bad record, or of the first record where the damage may lie.
    pub fn first_seq(&self) -> Option<u64> {
        match self {
            // A deleted record is the one the gap skips, not the one after it.
            Failure::Chain(ChainBreak {
                reason: BreakReason::SeqGap { expected, .. },
                ..
            }) => Some(*expected),
            Failure::Chain(broken) => u64::try_from(broken.seq).ok(),
            Failure::TreeNode { first, .. } | Failure::Forked { first, .. } => Some(*first),
            Failure::TreeBeyondLog { seq, .. } => Some(*seq),
            Failure::Truncated { log_size, .. } => Some(log_size + 1),
            Failure::Replayed { newest_size, .. } => Some(newest_size.map_or(1, |n| n + 1)),
            Failure::NotExtended { first, .. } => Some(*first),
            Failure::Inclusion { seq, .. } => Some(*seq),
            Failure::RangeCut { size, .. } => Some(size + 1),
            Failure::BadCheckpoint { .. } | Failure::Malformed(_) => None,
        }
    }
}

/// What an intact log showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Size and chain head.
    pub head: ChainHead,
    /// The tree head of all the records.
    pub root: Hash,
    /// The log's checkpoints checked against the records.
    pub checkpoints: u64,
    /// The size of the newest of them.
    pub newest_checkpoint: Option<u64>,
    /// Kept checkpoints checked against the records.
    pub kept: u64,
    /// Whether checkpoint signatures were checked (a key was given).
    pub signatures_checked: bool,
    /// The first record checked (after an export's prefix), 1 for a whole log.
    pub first_seq: u64,
    /// Whether each body was read again as an event (not with `hashes_only`).
    pub bodies_checked: bool,
}

/// Checks a log record by record; see the module documentation.
#[derive(Debug)]
pub struct LogVerifier {
    chain: ChainVerifier,
    tree: Frontier,
    keys: Vec<NoteVerifier>,
    /// Checkpoints waiting for the log to reach their size.
    pending: BTreeMap<u64, Vec<(Holder, Checkpoint)>>,
    /// The largest size a checkpoint matched at, and whose.
    matched: Option<(u64, Holder)>,
    checkpoints: u64,
    newest_log: Option<u64>,
    kept: u64,
    newest_kept: Option<u64>,
    first_seq: u64,
    hashes_only: bool,
}

impl LogVerifier {
    /// A verifier of a log from its first record; checkpoint signatures are checked with `keys`
    /// (a checkpoint must verify with one of them), or not at all when there are none.
    pub fn new(keys: Vec<NoteVerifier>) -> LogVerifier {
        LogVerifier {
            chain: ChainVerifier::new(),
            tree: Frontier::new(),
            keys,
            pending: BTreeMap::new(),
            matched: None,
            checkpoints: 0,
            newest_log: None,
            kept: 0,
            newest_kept: None,
            first_seq: 1,
            hashes_only: false,
        }
    }

    /// Skip re-reading each body as an event ([`ChainVerifier::hashes_only`]): sequence, links,
    /// hashes, the tree and the checkpoints are still checked.
    pub fn hashes_only(mut self, hashes_only: bool) -> LogVerifier {
        self.hashes_only = hashes_only;
        self.chain = self.chain.hashes_only(hashes_only);
        self
    }

    /// Start after the first `head.size` records, from their chain head and tree frontier (an
    /// export of a later range). What they were is proved only by checkpoints after them.
    pub fn resume(&mut self, head: ChainHead, tree: Frontier) -> Result<(), Failure> {
        if head.size != tree.size() || self.tree.size() != 0 {
            return Err(Failure::Malformed(format!(
                "the prefix of {} records has a tree of {} and must come first",
                head.size,
                tree.size()
            )));
        }
        self.chain = ChainVerifier::resume(head).hashes_only(self.hashes_only);
        self.tree = tree;
        self.first_seq = head.size + 1;
        Ok(())
    }

    /// The size verified so far.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The tree head of the records so far.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Reads a checkpoint note, checking its signature when keys were given.
    pub fn open(&self, holder: Holder, note: &str, what: &str) -> Result<Checkpoint, Failure> {
        let bad = |reason: String| Failure::BadCheckpoint {
            holder,
            what: what.to_owned(),
            reason,
        };
        if self.keys.is_empty() {
            if holder == Holder::Kept {
                return Err(bad("a kept checkpoint needs the log's key (--key)".into()));
            }
            return unverified_checkpoint(note).map_err(|err| bad(err.to_string()));
        }
        let mut first_error = None;
        for key in &self.keys {
            match key.open_checkpoint(note) {
                Ok(checkpoint) => return Ok(checkpoint),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(bad(first_error.map_or_else(String::new, |e| e.to_string())))
    }

    /// A checkpoint the verifier kept: the log must still have its records and root.
    pub fn keep(&mut self, note: &str) -> Result<(), Failure> {
        let checkpoint = self.open(Holder::Kept, note, &format!("number {}", self.kept + 1))?;
        self.kept += 1;
        self.newest_kept = self.newest_kept.max(Some(checkpoint.size));
        self.expect(Holder::Kept, checkpoint)
    }

    /// A checkpoint the log holds, in order of size.
    pub fn log_checkpoint(&mut self, note: &str) -> Result<Checkpoint, Failure> {
        let what = format!("number {}", self.checkpoints + 1);
        let checkpoint = self.open(Holder::Log, note, &what)?;
        if let Some(newest) = self.newest_log
            && checkpoint.size < newest
        {
            return Err(Failure::Malformed(format!(
                "the log's checkpoint of size {} comes after one of size {newest}: an old checkpoint replayed",
                checkpoint.size
            )));
        }
        self.checkpoints += 1;
        self.newest_log = Some(checkpoint.size);
        self.expect(Holder::Log, checkpoint.clone())?;
        Ok(checkpoint)
    }

    /// A checkpoint of the log past the records checked, joined to them by an RFC 9162
    /// §2.1.4 consistency proof (an export of a range that ends before it).
    pub fn extending_checkpoint(
        &mut self,
        note: &str,
        proof: &[Hash],
    ) -> Result<Checkpoint, Failure> {
        let checkpoint = self.open(
            Holder::Log,
            note,
            &format!("number {}", self.checkpoints + 1),
        )?;
        let from = self.tree.size();
        if checkpoint.size <= from || self.newest_log.is_some_and(|n| checkpoint.size < n) {
            return Err(Failure::Malformed(format!(
                "a checkpoint of size {} cannot extend the records so far ({from})",
                checkpoint.size
            )));
        }
        if !merkle::verify_consistency(
            from,
            checkpoint.size,
            &self.tree.root(),
            &checkpoint.root,
            proof,
        ) {
            return Err(Failure::NotExtended {
                from,
                size: checkpoint.size,
                first: self.matched.map_or(self.first_seq, |(at, _)| at + 1),
            });
        }
        self.checkpoints += 1;
        self.newest_log = Some(checkpoint.size);
        Ok(checkpoint)
    }

    fn expect(&mut self, holder: Holder, checkpoint: Checkpoint) -> Result<(), Failure> {
        let size = checkpoint.size;
        if size < self.tree.size() {
            return Err(Failure::Malformed(format!(
                "the {holder} checkpoint of size {size} comes after record {}: it cannot be checked here",
                self.tree.size()
            )));
        }
        self.pending
            .entry(size)
            .or_default()
            .push((holder, checkpoint));
        self.settle()
    }

    /// Checks the checkpoints of the current size.
    pub fn settle(&mut self) -> Result<(), Failure> {
        let size = self.tree.size();
        let Some(due) = self.pending.remove(&size) else {
            return Ok(());
        };
        let root = self.tree.root();
        let previous = self.matched;
        for (holder, checkpoint) in due {
            if checkpoint.root != root {
                let (first, matched) = match previous {
                    Some((at, whose)) => (
                        at + 1,
                        format!(" (the {whose} checkpoint of size {at} matched)"),
                    ),
                    None => (self.first_seq, String::new()),
                };
                return Err(Failure::Forked {
                    holder,
                    size,
                    signed: hex::encode(checkpoint.root),
                    computed: hex::encode(root),
                    first,
                    matched,
                });
            }
            self.matched = Some((size, holder));
        }
        Ok(())
    }

    /// Checks the next record, then the checkpoints of its size.
    pub fn record(&mut self, record: &StoredRecord) -> Result<(), Failure> {
        self.append(record)?;
        self.settle()
    }

    /// Checks the next record's chain and adds it to the tree, leaving the checkpoints of its
    /// size to [`LogVerifier::settle`]: a store compares the tree nodes it keeps in between, so
    /// that a changed record is named by its node rather than placed between two checkpoints.
    /// Returns the nodes it completes, bottom up.
    pub fn append(&mut self, record: &StoredRecord) -> Result<Vec<(NodeId, Hash)>, Failure> {
        self.chain.check(record).map_err(Failure::Chain)?;
        let mut completed = Vec::with_capacity(2);
        self.tree.push(merkle::leaf_hash(&record.body), |id, hash| {
            completed.push((id, *hash))
        });
        Ok(completed)
    }

    /// Checks what only the end shows: checkpoints beyond the log, a replayed checkpoint.
    pub fn finish(self) -> Result<Summary, Failure> {
        let log_size = self.tree.size();
        if let Some((&size, due)) = self.pending.iter().next() {
            let holder = due.first().map_or(Holder::Log, |(holder, _)| *holder);
            return Err(Failure::Truncated {
                holder,
                size,
                log_size,
            });
        }
        if let Some(kept) = self.newest_kept
            && self.newest_log.is_none_or(|newest| newest < kept)
        {
            return Err(Failure::Replayed {
                newest: self
                    .newest_log
                    .map_or_else(|| "is missing".to_owned(), |n| format!("has size {n}")),
                newest_size: self.newest_log,
                kept,
            });
        }
        Ok(Summary {
            head: self.chain.head(),
            root: self.tree.root(),
            checkpoints: self.checkpoints,
            newest_checkpoint: self.newest_log,
            kept: self.kept,
            signatures_checked: !self.keys.is_empty(),
            first_seq: self.first_seq,
            bodies_checked: !self.hashes_only,
        })
    }
}

/// The first and last record under tree node `id`, 1-based.
pub fn node_records((level, index): NodeId) -> (u64, u64) {
    let width = 1u64 << level;
    (index * width + 1, (index + 1) * width)
}
