//! Every kind of tampering the audit log promises to show, done to a real SQLite log the way an
//! attacker with write access to the file would (guard triggers dropped, raw SQL, hashes and
//! the tree recomputed where that hides the change), then verified from the database and from
//! its export: each is caught and the first bad record named.

// Test code: a failing unwrap is a failing test, helpers included (clippy's test allowances
// cover only #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use behavry_audit::chain::{GENESIS_PREV_HASH, chain_hash};
use behavry_audit::checkpoint::{NoteSigner, NoteVerifier};
use behavry_audit::export::{ExportError, ExportSummary, ExportVerifier};
use behavry_audit::ingest::parse_batch;
use behavry_audit::verify::Holder;
use behavry_audit::{AuditStore, Failure, LogVerifier, Summary, VerifyOutcome, verify_database};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

const ORIGIN: &str = "behavry.test/audit";

fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, ed25519_dalek::SigningKey::from_bytes(&[7; 32])).unwrap()
}

fn verifier() -> LogVerifier {
    LogVerifier::new(vec![NoteVerifier::parse(&signer().verifier_key()).unwrap()])
}

/// Event `n` of a log, its agent `agent` (a forked log differs there).
fn event_line(n: u64, agent: &str) -> String {
    format!(
        r#"{{"eventId":"event-{n}","traceId":"{:032x}","spanId":"00f067aa0ba902b7","kind":"intent","timeMs":{},"agent":"{agent}","request":{{"server":"files","method":"tools/call","tool":"read_file","arguments":{{"path":"/tmp/{n}"}}}}}}"#,
        n + 1,
        1_760_000_000_000 + n
    ) + "\n"
}

/// A log of 45 records, checkpoints signed at 10, 20, 30 and 40 (records 41..=45 are past the
/// last); from record `fork_at` on, the events are another agent's (another history with the
/// same start).
async fn build_log(dir: &Path, name: &str, fork_at: u64) -> PathBuf {
    let path = dir.join(name);
    let store = AuditStore::open(&path).await.unwrap();
    for chunk in 0..5u64 {
        let lines: String = (chunk * 10 + 1..=(chunk * 10 + 10).min(45))
            .map(|n| event_line(n, if n >= fork_at { "mallory" } else { "agent-a" }))
            .collect();
        store
            .append_batch(&parse_batch(lines.as_bytes()).unwrap())
            .await
            .unwrap();
        if chunk < 4 {
            store.sign_checkpoint(&signer(), ORIGIN).await.unwrap();
        }
    }
    store.close().await;
    path
}

async fn log(dir: &Path) -> PathBuf {
    build_log(dir, "audit.db", u64::MAX).await
}

/// The newest checkpoint note of the log at `path` of size `size`, as a verifier would have
/// kept it.
async fn checkpoint_note(path: &Path, size: u64) -> String {
    let mut conn = connect(path).await;
    let note: String = sqlx::query_scalar("SELECT note FROM audit_checkpoints WHERE size = ?")
        .bind(i64::try_from(size).unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    note
}

async fn connect(path: &Path) -> SqliteConnection {
    // Whoever edits the file by hand is not held to its foreign keys.
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(false),
    )
    .await
    .unwrap()
}

/// Raw SQL with the append-only guards dropped.
async fn tamper(path: &Path, statements: &[&str]) {
    let mut conn = connect(path).await;
    for trigger in [
        "audit_records_no_update",
        "audit_records_no_delete",
        "audit_tree_nodes_no_update",
        "audit_tree_nodes_no_delete",
        "audit_checkpoints_no_update",
        "audit_checkpoints_no_delete",
    ] {
        sqlx::query(&format!("DROP TRIGGER IF EXISTS {trigger}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

type Row = (String, String, String, i64, Vec<u8>);

/// Rewrites the records with `edit`, then renumbers them and recomputes every chain hash and
/// the whole tree (deleted, rebuilt by the sink when it opens the file): all an attacker without
/// the signing key can do to hide a change.
async fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<Row>)) {
    let mut conn = connect(path).await;
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT event_id, trace_id, kind, time_ms, body FROM audit_records ORDER BY seq",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    edit(&mut rows);
    tamper(
        path,
        &[
            "DELETE FROM audit_search",
            "DELETE FROM audit_records",
            "DELETE FROM audit_tree_nodes",
        ],
    )
    .await;
    let mut conn = connect(path).await;
    let mut prev = GENESIS_PREV_HASH;
    for (index, (event_id, trace_id, kind, time_ms, body)) in rows.iter().enumerate() {
        let hash = chain_hash(&prev, body);
        sqlx::query(
            "INSERT INTO audit_records \
             (seq, event_id, trace_id, kind, time_ms, body, prev_hash, hash, received_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
        )
        .bind(i64::try_from(index).unwrap() + 1)
        .bind(event_id)
        .bind(trace_id)
        .bind(kind)
        .bind(time_ms)
        .bind(body)
        .bind(prev.to_vec())
        .bind(hash.to_vec())
        .execute(&mut conn)
        .await
        .unwrap();
        prev = hash;
    }
    conn.close().await.unwrap();
    AuditStore::open(path).await.unwrap().close().await;
}

async fn db_outcome(path: &Path, kept: &[String]) -> Result<Summary, Failure> {
    let mut log = verifier();
    for note in kept {
        log.keep(note)?;
    }
    match verify_database(path, log).await.unwrap() {
        VerifyOutcome::Intact(summary) => Ok(summary),
        VerifyOutcome::Broken(failure) => Err(failure),
    }
}

async fn export_lines(path: &Path, from: u64, to: Option<u64>, proofs: bool) -> Vec<String> {
    let store = AuditStore::open_read_only(path).await.unwrap();
    let (lines, mut receiver) = tokio::sync::mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(line) = receiver.recv().await {
            all.push(line);
        }
        all
    });
    store.export(from, to, proofs, &lines).await.unwrap();
    drop(lines);
    store.close().await;
    collect.await.unwrap()
}

fn verify_export(lines: &[String], kept: &[String]) -> Result<ExportSummary, ExportError> {
    let mut verifier = ExportVerifier::new(verifier(), kept.to_vec());
    for line in lines {
        verifier.line(line.trim_end_matches('\n'))?;
    }
    verifier.finish()
}

fn export_failure(lines: &[String], kept: &[String]) -> Failure {
    match verify_export(lines, kept) {
        Err(ExportError::Failed(failure)) => failure,
        other => panic!("tampering not detected in the export: {other:?}"),
    }
}

fn failure(outcome: Result<Summary, Failure>) -> Failure {
    outcome.expect_err("tampering not detected")
}

/// `found` says the records no longer hash to `holder`'s checkpoint of `size` and places the
/// first changed record at `first` or after.
fn assert_forked(found: &Failure, holder: Holder, size: u64, first: u64) {
    assert!(
        matches!(found, Failure::Forked { holder: h, size: s, first: f, .. }
            if *h == holder && *s == size && *f == first),
        "{found}"
    );
    assert_eq!(found.first_seq(), Some(first));
}

/// `found` says `holder`'s checkpoint of `size` covers records past the log's `log_size`.
fn assert_truncated(found: &Failure, holder: Holder, size: u64, log_size: u64) {
    assert_eq!(
        found,
        &Failure::Truncated {
            holder,
            size,
            log_size
        }
    );
    assert_eq!(found.first_seq(), Some(log_size + 1));
}

#[tokio::test]
async fn an_intact_log_verifies_whole_in_parts_and_against_kept_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let kept = [checkpoint_note(&path, 30).await];
    let summary = db_outcome(&path, &kept).await.unwrap();
    assert_eq!(summary.head.size, 45);
    assert_eq!((summary.checkpoints, summary.kept), (4, 1));
    assert_eq!(summary.newest_checkpoint, Some(40));
    assert!(summary.signatures_checked);

    let whole = verify_export(&export_lines(&path, 1, None, true).await, &kept).unwrap();
    assert_eq!(whole.log.root, summary.root);
    assert_eq!(whole.inclusion_proofs, 40);

    // A range in the middle: its prefix, checkpoints 20 and 30 in it, a consistency proof to 40.
    let part = export_lines(&path, 12, Some(33), true).await;
    assert!(part[1].contains("\"type\":\"prefix\""), "{}", part[1]);
    assert!(part[part.len() - 2].contains("\"type\":\"consistency\""));
    let summary = verify_export(&part, &kept).unwrap();
    assert_eq!(summary.log.first_seq, 12);
    assert_eq!(summary.log.head.size, 33);
    assert_eq!(summary.inclusion_proofs, 22);
    assert_eq!(summary.log.newest_checkpoint, Some(40));

    // A kept checkpoint outside a range cannot be checked with it: said, not passed.
    let early = export_lines(&path, 1, Some(12), false).await;
    let far = [checkpoint_note(&path, 40).await];
    assert!(matches!(
        verify_export(&early, &far),
        Err(ExportError::Unverifiable(_))
    ));
}

#[tokio::test]
async fn a_flipped_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    // 'e' (0x65) becomes 'd' (0x64) in record 17's body.
    tamper(
        &path,
        &["UPDATE audit_records SET body = CAST(replace(CAST(body AS TEXT), 'read_file', 'read_fild') AS BLOB) WHERE seq = 17"],
    )
    .await;
    for found in [
        failure(db_outcome(&path, &[]).await),
        export_failure(&export_lines(&path, 1, None, false).await, &[]),
    ] {
        assert!(matches!(found, Failure::Chain(_)), "{found}");
        assert_eq!(found.first_seq(), Some(17), "{found}");
        assert!(
            found.to_string().contains("body or hash altered"),
            "{found}"
        );
    }
    // In an export file too: one byte of record 5's line.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let mut lines = export_lines(&path, 1, None, false).await;
    let line = lines.iter_mut().find(|l| l.contains("\"seq\":5,")).unwrap();
    *line = line.replacen("agent-a", "agent-b", 1);
    let found = export_failure(&lines, &[]);
    assert_eq!(found.first_seq(), Some(5), "{found}");
}

#[tokio::test]
async fn an_altered_hash_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    tamper(
        &path,
        &["UPDATE audit_records SET hash = zeroblob(32) WHERE seq = 4"],
    )
    .await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(
        found.to_string().contains("body or hash altered"),
        "{found}"
    );
    assert_eq!(found.first_seq(), Some(4));
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    tamper(&path, &["DELETE FROM audit_records WHERE seq = 17"]).await;
    let found = failure(db_outcome(&path, &[]).await);
    assert_eq!(found.first_seq(), Some(17), "{found}");
    assert!(found.to_string().contains("a record is missing"), "{found}");

    // The later records renumbered to close the gap: the next one no longer links.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    tamper(
        &path,
        &[
            "DELETE FROM audit_records WHERE seq = 17",
            "UPDATE audit_records SET seq = seq + 1000 WHERE seq > 17",
            "UPDATE audit_records SET seq = seq - 1001 WHERE seq > 1000",
        ],
    )
    .await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(
        found
            .to_string()
            .contains("records reordered, inserted or removed"),
        "{found}"
    );
    assert_eq!(found.first_seq(), Some(17));

    // Hidden: the later records renumbered and every hash and tree node recomputed. The tree
    // the sink rebuilt is the tampered one, so only the signed roots show it.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    rewrite(&path, |rows| {
        rows.remove(16);
    })
    .await;
    let found = failure(db_outcome(&path, &[]).await);
    assert_forked(&found, Holder::Log, 20, 11);
    let found = export_failure(&export_lines(&path, 1, None, false).await, &[]);
    assert_forked(&found, Holder::Log, 20, 11);
}

#[tokio::test]
async fn a_record_deleted_with_the_tree_left_alone_is_named_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    // Records renumbered and rechained by hand, tree nodes untouched: the stored leaf of seq 17
    // is the deleted record's.
    let mut conn = connect(&path).await;
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM audit_records ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut statements = vec![
        "DELETE FROM audit_records WHERE seq = 17".to_owned(),
        "UPDATE audit_records SET seq = seq + 1000 WHERE seq > 17".to_owned(),
        "UPDATE audit_records SET seq = seq - 1001 WHERE seq > 1000".to_owned(),
    ];
    let mut prev = GENESIS_PREV_HASH;
    for (index, body) in bodies.iter().enumerate().filter(|(i, _)| *i != 16) {
        let seq = if index < 16 { index + 1 } else { index };
        let hash = chain_hash(&prev, body);
        statements.push(format!(
            "UPDATE audit_records SET prev_hash = x'{}', hash = x'{}' WHERE seq = {seq}",
            hex::encode(prev),
            hex::encode(hash)
        ));
        prev = hash;
    }
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    tamper(&path, &statements).await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(
        matches!(
            found,
            Failure::TreeNode {
                level: 0,
                index: 16,
                first: 17,
                ..
            }
        ),
        "{found}"
    );
}

#[tokio::test]
async fn a_tree_taken_away_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    tamper(&path, &["DELETE FROM audit_tree_nodes"]).await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(
        matches!(found, Failure::TreeNode { level: 0, index: 0, first: 1, ref stored, .. } if stored == "missing"),
        "{found}"
    );
}

#[tokio::test]
async fn an_inserted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    rewrite(&path, |rows| {
        let mut forged = rows[16].clone();
        forged.0 = "forged".into();
        forged.4 = String::from_utf8(forged.4)
            .unwrap()
            .replace("event-17", "forged")
            .into_bytes();
        rows.insert(16, forged);
    })
    .await;
    let found = failure(db_outcome(&path, &[]).await);
    assert_forked(&found, Holder::Log, 20, 11);
    assert_eq!(found.first_seq(), Some(11));
}

#[tokio::test]
async fn reordered_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    tamper(
        &path,
        &[
            "UPDATE audit_records SET seq = 100 WHERE seq = 23",
            "UPDATE audit_records SET seq = 23 WHERE seq = 24",
            "UPDATE audit_records SET seq = 24 WHERE seq = 100",
        ],
    )
    .await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(found.to_string().contains("reordered"), "{found}");
    assert_eq!(found.first_seq(), Some(23));
    let found = export_failure(&export_lines(&path, 1, None, false).await, &[]);
    assert_eq!(found.first_seq(), Some(23));

    // With the chain and the tree recomputed, the signed root of 30 shows it.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    rewrite(&path, |rows| rows.swap(22, 23)).await;
    let found = failure(db_outcome(&path, &[]).await);
    assert_forked(&found, Holder::Log, 30, 21);
}

#[tokio::test]
async fn a_truncated_tail_is_named() {
    // Records cut, tree left: its leaves show where the log ended.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    tamper(&path, &["DELETE FROM audit_records WHERE seq > 35"]).await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(
        matches!(found, Failure::TreeBeyondLog { seq: 36, size: 35 }),
        "{found}"
    );
    // The export still carries the checkpoint of 40.
    let found = export_failure(&export_lines(&path, 1, None, false).await, &[]);
    assert_truncated(&found, Holder::Log, 40, 35);
    assert_eq!(found.first_seq(), Some(36));

    // Records, tree and checkpoints cut: the checkpoint the verifier kept shows it.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let kept = [checkpoint_note(&path, 40).await];
    tamper(
        &path,
        &[
            "DELETE FROM audit_records WHERE seq > 35",
            "DELETE FROM audit_tree_nodes WHERE ((idx + 1) << level) > 35",
            "DELETE FROM audit_checkpoints WHERE size > 35",
        ],
    )
    .await;
    for found in [
        failure(db_outcome(&path, &kept).await),
        export_failure(&export_lines(&path, 1, None, false).await, &kept),
    ] {
        assert_truncated(&found, Holder::Kept, 40, 35);
    }
    // An export cut short of its header's range.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let lines = export_lines(&path, 1, None, false).await;
    let cut: Vec<String> = lines
        .iter()
        .take_while(|l| !l.contains("\"seq\":38,"))
        .cloned()
        .collect();
    let found = export_failure(&cut, &[]);
    assert_eq!(found, Failure::RangeCut { to: 45, size: 37 });
    assert_eq!(found.first_seq(), Some(38));
}

#[tokio::test]
async fn a_forked_history_is_named() {
    // The same key signed another history from record 25 on (a compromised sink): the log is
    // consistent in itself; the checkpoint kept from the first history shows the fork.
    let dir = tempfile::tempdir().unwrap();
    let original = log(dir.path()).await;
    let kept = [
        checkpoint_note(&original, 20).await,
        checkpoint_note(&original, 30).await,
    ];
    let forked = build_log(dir.path(), "forked.db", 25).await;
    assert!(db_outcome(&forked, &[]).await.is_ok());
    for found in [
        failure(db_outcome(&forked, &kept).await),
        export_failure(&export_lines(&forked, 1, None, false).await, &kept),
    ] {
        assert_forked(&found, Holder::Kept, 30, 21);
        assert!(found.to_string().contains("among seq=21..=30"), "{found}");
    }
}

#[tokio::test]
async fn an_old_checkpoint_replayed_is_named() {
    // Every record there, but the log shows its checkpoint of 20 as its newest.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let kept = [checkpoint_note(&path, 30).await];
    tamper(&path, &["DELETE FROM audit_checkpoints WHERE size > 20"]).await;
    for found in [
        failure(db_outcome(&path, &kept).await),
        export_failure(&export_lines(&path, 1, None, false).await, &kept),
    ] {
        assert!(
            matches!(
                found,
                Failure::Replayed {
                    newest_size: Some(20),
                    kept: 30,
                    ..
                }
            ),
            "{found}"
        );
        assert_eq!(found.first_seq(), Some(21));
    }
    // In an export, an old checkpoint after a newer one.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let mut lines = export_lines(&path, 1, None, false).await;
    let old = lines
        .iter()
        .find(|l| l.contains("\"type\":\"checkpoint\""))
        .unwrap()
        .clone();
    lines.push(old);
    let found = export_failure(&lines, &[]);
    assert!(
        found.to_string().contains("old checkpoint replayed"),
        "{found}"
    );
}

#[tokio::test]
async fn forged_checkpoints_and_proofs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    // A checkpoint signed by another key.
    let other = NoteSigner::new(ORIGIN, ed25519_dalek::SigningKey::from_bytes(&[9; 32])).unwrap();
    let forged = other
        .sign(&format!("{ORIGIN}\n45\n{}\n", "A".repeat(43) + "="))
        .unwrap();
    tamper(
        &path,
        &[&format!(
            "INSERT INTO audit_checkpoints (size, root, note, signed_at_ms) VALUES (45, zeroblob(32), '{}', 0)",
            forged.replace('\'', "''")
        )],
    )
    .await;
    let found = failure(db_outcome(&path, &[]).await);
    assert!(
        matches!(
            found,
            Failure::BadCheckpoint {
                holder: Holder::Log,
                ..
            }
        ),
        "{found}"
    );
    // A wrong inclusion proof in an export.
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path()).await;
    let mut lines = export_lines(&path, 1, None, true).await;
    let line = lines.iter_mut().find(|l| l.contains("\"seq\":6,")).unwrap();
    let start = line.find("\"proof\":[\"").unwrap() + 10;
    let flipped = if &line[start..=start] == "0" {
        "1"
    } else {
        "0"
    };
    line.replace_range(start..=start, flipped);
    let found = export_failure(&lines, &[]);
    assert!(
        matches!(found, Failure::Inclusion { seq: 6, size: 10 }),
        "{found}"
    );
}
