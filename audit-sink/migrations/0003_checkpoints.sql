-- Signed checkpoints of the log (docs/audit.md "Signed checkpoints"): the C2SP signed note the
-- sink signed for each tree size, newest the largest. The sink signs a size only when the tree
-- of the last checkpoint is still a prefix of its tree, so these never fork.
CREATE TABLE audit_checkpoints (
    size         INTEGER PRIMARY KEY NOT NULL CHECK (size >= 1),
    root         BLOB    NOT NULL CHECK (length(root) = 32),
    note         TEXT    NOT NULL,
    signed_at_ms INTEGER NOT NULL
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
