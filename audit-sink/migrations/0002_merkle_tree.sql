-- The Merkle tree over the records (RFC 9162 §2.1, docs/audit.md "The Merkle tree"): every
-- complete subtree, so tree heads and proofs need O(log n) reads. Level 0, index i is the leaf
-- hash SHA-256(0x00 || body) of record seq i + 1; level l, index i is the hash of the 2^l leaves
-- from i * 2^l. Written in the transaction that appends the records; a log written before this
-- migration gets its nodes when the sink next opens it.
CREATE TABLE audit_tree_nodes (
    level INTEGER NOT NULL CHECK (level >= 0 AND level < 64),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TRIGGER audit_tree_nodes_no_update BEFORE UPDATE ON audit_tree_nodes
BEGIN
    SELECT RAISE(ABORT, 'audit tree nodes are append-only');
END;

CREATE TRIGGER audit_tree_nodes_no_delete BEFORE DELETE ON audit_tree_nodes
BEGIN
    SELECT RAISE(ABORT, 'audit tree nodes are append-only');
END;
