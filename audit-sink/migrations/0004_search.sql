-- What trace search filters on (docs/audit.md "Searching traces"): one row per record, taken
-- from its body when it is appended (or, for records from before this table, when the sink next
-- opens the log). Derived data: the records and their hashes stay the evidence; this table only
-- finds them.
CREATE TABLE audit_search (
    seq        INTEGER PRIMARY KEY NOT NULL REFERENCES audit_records (seq),
    trace_id   TEXT    NOT NULL,
    time_ms    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    agent      TEXT,
    server     TEXT,
    method     TEXT,
    -- The tool called, or the prompt or resource asked for.
    target     TEXT,
    session_id TEXT,
    -- 'allow' or 'deny' on decision records, else NULL.
    decision   TEXT
);

CREATE INDEX audit_search_by_time ON audit_search (time_ms);
CREATE INDEX audit_search_by_agent ON audit_search (agent, time_ms);
CREATE INDEX audit_search_by_target ON audit_search (server, target, time_ms);
CREATE INDEX audit_search_by_session ON audit_search (session_id, time_ms);
CREATE INDEX audit_search_by_decision ON audit_search (decision, time_ms);
