-- The append-only audit log: one row per accepted event, hash-chained in seq order.
-- hash = SHA-256(prev_hash || body); prev_hash of seq 1 is 32 zero bytes (see docs/audit.md).
CREATE TABLE audit_records (
    seq            INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    event_id       TEXT    NOT NULL UNIQUE,
    trace_id       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    time_ms        INTEGER NOT NULL,
    body           BLOB    NOT NULL,
    prev_hash      BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    received_at_ms INTEGER NOT NULL
);

CREATE INDEX audit_records_by_trace ON audit_records (trace_id, seq);

-- Guard rails against accidental edits through the sink's own connection or a careless operator.
-- They are not the security boundary (anyone with the file can drop them); the hash chain and
-- `behavry audit verify` are.
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
