//! Checks of the `Audit` trait.

use super::*;

/// Entries are numbered from 1, each chained to the one before, and can
/// be filtered.
pub async fn audit_chain(store: Arc<dyn Store>) {
    let store = &*store;
    assert!(store.audit_head().await.unwrap().is_none(), "no head yet");
    let mut rows = Vec::new();
    let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    for (i, action) in ["a", "b", "c"].into_iter().enumerate() {
        let draft = AuditDraft {
            at: start + time::Duration::minutes(i as i64),
            content: format!(r#"{{"action":"{action}","actor":"ops"}}"#),
        };
        rows.push(
            store
                .append_audit(draft, std::sync::Arc::new(test_chain))
                .await
                .unwrap(),
        );
    }
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(rows[0].prev_hash, [0; 32]);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(
            pair[1].hash,
            test_chain(
                &pair[0].hash,
                &crate::audit_bytes(pair[1].id, pair[1].at_ms, &pair[1].content)
            )
        );
    }
    let all = store
        .audit_entries(AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all, rows);
    assert_eq!(
        store.audit_head().await.unwrap().as_ref(),
        rows.last(),
        "the newest"
    );
    let only_b = store
        .audit_entries(AuditQuery {
            limit: 10,
            action: Some("b".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(only_b.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
    // A time window: from the second entry's minute, before the third's.
    let window = store
        .audit_entries(AuditQuery {
            limit: 10,
            since: Some(start + time::Duration::minutes(1)),
            until: Some(start + time::Duration::minutes(2)),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(window.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
    let from_second = store
        .audit_entries(AuditQuery {
            limit: 10,
            since: Some(start + time::Duration::seconds(30)),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        from_second.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![2, 3]
    );
}
