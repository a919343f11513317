//! The tamper-evident audit log: every admin request, login, logout, token
//! mint and revocation, each entry chained to the one before by SHA-256.
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ "n\nat_ms\ncontent")`, with 32 zero bytes
//! before the first entry. Editing, removing or reordering any entry breaks
//! every hash after it; [`verify`] names the first entry that does not fit.
//!
//! Refused admin requests without a valid credential are not written one
//! row each (a client could make the store write as fast as it can send):
//! [`Core::audit_refusal`] writes the first refusal of a source in an
//! interval at once and counts the rest, and [`Core::flush_refusals`]
//! writes one `admin.refused` row with the count when the interval ends.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde::Serialize;
use time::OffsetDateTime;
use unimsg_proto::admin::{AuditEntry, AuditPage};
use unimsg_store::{AuditDraft, AuditRow, audit_bytes};

/// The filters of an audit query (defined with the store trait that runs
/// it; re-exported so that `http` needs no storage dependency).
pub use unimsg_store::AuditQuery;

use crate::Core;
use crate::error::{CoreError, Result};

/// What an audit entry records. Serialized in field order, which is part
/// of the hashed content: append fields, never reorder them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    /// `admin.request`, `auth.login`, `auth.login_failed`, `auth.logout`,
    /// `auth.token_minted`, `session.revoked`, …
    pub action: String,
    /// `admin`, `user` or `system`.
    pub actor_kind: String,
    /// The admin id or user id that acted (`-` when unknown).
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The HTTP status, or `ok` / `denied` for events outside a request.
    pub outcome: String,
    /// The user or session acted upon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `admin.refused`: how many refused requests the entry stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The chain function: SHA-256 over the previous hash and the entry's bytes.
pub fn chain(prev: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev);
    ctx.update(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {id} was altered: its hash does not match its content")]
    Altered { id: u64 },
    #[error("entry {expected} is missing (the next entry present is {found})")]
    Removed { expected: u64, found: u64 },
    #[error("entry {id} does not follow the entry before it (removed or reordered entries)")]
    Unlinked { id: u64 },
}

/// Checks rows (in id order, continuing from `prev`: the last verified
/// id and hash) and returns the new position.
pub fn verify(prev: (u64, [u8; 32]), rows: &[AuditRow]) -> Result<(u64, [u8; 32]), ChainBreak> {
    let (mut last_id, mut last_hash) = prev;
    for row in rows {
        if row.id != last_id + 1 {
            return Err(ChainBreak::Removed {
                expected: last_id + 1,
                found: row.id,
            });
        }
        if row.prev_hash != last_hash {
            return Err(ChainBreak::Unlinked { id: row.id });
        }
        if chain(&last_hash, &audit_bytes(row.id, row.at_ms, &row.content)) != row.hash {
            return Err(ChainBreak::Altered { id: row.id });
        }
        last_id = row.id;
        last_hash = row.hash;
    }
    Ok((last_id, last_hash))
}

/// An exported head, `SEQ:HEX` (what `GET /v1/admin/audit/head` and
/// `unimsg audit verify` print).
pub fn head_text(seq: u64, hash: &[u8; 32]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{seq}:{hex}")
}

/// Walks the whole log of a store, and with `expected` (an exported head)
/// checks that its entry is still there unchanged, so that removing the
/// newest entries is found too; returns the head.
pub async fn verify_store_against(
    store: &dyn unimsg_store::Audit,
    expected: Option<(u64, [u8; 32])>,
) -> Result<(u64, [u8; 32]), VerifyError> {
    let head = verify_store_head(store).await?;
    if let Some((seq, hash)) = expected {
        let rows = store
            .audit_entries(AuditQuery {
                after: seq.saturating_sub(1),
                limit: 1,
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| VerifyError::Store(e.to_string()))?;
        match rows.first() {
            Some(row) if row.id == seq && row.hash == hash => {}
            Some(row) if row.id == seq => {
                return Err(VerifyError::Broken(ChainBreak::Altered { id: seq }));
            }
            _ => return Err(VerifyError::HeadGone(seq)),
        }
    }
    Ok(head)
}

/// Walks the whole log of a store; returns how many entries were checked.
pub async fn verify_store(store: &dyn unimsg_store::Audit) -> Result<u64, VerifyError> {
    Ok(verify_store_head(store).await?.0)
}

async fn verify_store_head(
    store: &dyn unimsg_store::Audit,
) -> Result<(u64, [u8; 32]), VerifyError> {
    let mut position = (0, [0u8; 32]);
    loop {
        let rows = store
            .audit_entries(AuditQuery {
                after: position.0,
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| VerifyError::Store(e.to_string()))?;
        if rows.is_empty() {
            return Ok(position);
        }
        position = verify(position, &rows).map_err(VerifyError::Broken)?;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Broken(ChainBreak),
    #[error("cannot read the audit log: {0}")]
    Store(String),
    #[error("entry {0} of the exported head is gone: the newest entries were removed")]
    HeadGone(u64),
}

/// Most sources counted at once; refusals from further sources are
/// counted together under [`OVERFLOW`], so memory stays bounded.
const MAX_SOURCES: usize = 10_000;

/// The source key of refusals counted together once [`MAX_SOURCES`] is reached.
const OVERFLOW: &str = "*";

/// Refusals counted per source since the first one of its interval.
#[derive(Debug, Default)]
pub(crate) struct Refusals(Mutex<HashMap<String, Pending>>);

#[derive(Debug)]
struct Pending {
    since: OffsetDateTime,
    ip: Option<String>,
    actor: String,
    /// Refusals after the first, by outcome (HTTP status).
    held: BTreeMap<String, u64>,
}

/// What to write for one refusal: the refusal itself when it is the first
/// of its source's interval, and the summary of the interval it ended.
#[derive(Debug, Default)]
pub(crate) struct ToWrite {
    pub(crate) summary: Option<AuditRecord>,
    pub(crate) first: Option<AuditRecord>,
}

impl Pending {
    fn start(now: OffsetDateTime, key: &str, record: &AuditRecord) -> Self {
        let overflow = key == OVERFLOW;
        Pending {
            since: now,
            ip: if overflow {
                Some(OVERFLOW.into())
            } else {
                record.ip.clone()
            },
            actor: if overflow {
                "-".into()
            } else {
                record.actor.clone()
            },
            held: BTreeMap::new(),
        }
    }

    fn summary(self, now: OffsetDateTime) -> Option<AuditRecord> {
        let count: u64 = self.held.values().sum();
        if count == 0 {
            return None;
        }
        let outcomes = self
            .held
            .iter()
            .map(|(outcome, n)| format!("{outcome}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let since = self.since.unix_timestamp();
        let until = now.unix_timestamp();
        Some(AuditRecord {
            action: "admin.refused".into(),
            actor_kind: "admin".into(),
            actor: self.actor,
            ip: self.ip,
            outcome: "denied".into(),
            detail: Some(format!(
                "{count} more refused requests from {since} to {until} (Unix seconds); by status: {outcomes}"
            )),
            count: Some(count),
            ..AuditRecord::default()
        })
    }
}

/// Which sources [`Refusals::take`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sources {
    /// Those whose interval has ended.
    Ended,
    /// Every one (at shutdown).
    All,
}

impl Refusals {
    /// Counts one refusal of the source `(ip, actor)` of `record`.
    pub(crate) fn count(
        &self,
        now: OffsetDateTime,
        interval: time::Duration,
        record: AuditRecord,
    ) -> ToWrite {
        let mut pending = self.0.lock();
        let mut key = format!(
            "{}\n{}",
            record.ip.as_deref().unwrap_or("unknown"),
            record.actor
        );
        if !pending.contains_key(&key) && pending.len() >= MAX_SOURCES {
            key = OVERFLOW.to_owned();
        }
        if let Some(p) = pending.get_mut(&key) {
            if now < p.since + interval {
                *p.held.entry(record.outcome).or_default() += 1;
                return ToWrite::default();
            }
            let ended = std::mem::replace(p, Pending::start(now, &key, &record));
            return ToWrite {
                summary: ended.summary(now),
                first: Some(record),
            };
        }
        pending.insert(key.clone(), Pending::start(now, &key, &record));
        ToWrite {
            summary: None,
            first: Some(record),
        }
    }

    /// Takes the summaries of the `which` sources.
    pub(crate) fn take(
        &self,
        now: OffsetDateTime,
        interval: time::Duration,
        which: Sources,
    ) -> Vec<AuditRecord> {
        let mut pending = self.0.lock();
        let keys: Vec<String> = pending
            .iter()
            .filter(|(_, p)| which == Sources::All || p.since + interval <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| pending.remove(k))
            .filter_map(|p| p.summary(now))
            .collect()
    }
}

impl Core {
    fn refusal_interval(&self) -> time::Duration {
        time::Duration::seconds(self.config.admin.refusal_audit_interval_secs.max(1) as i64)
    }

    /// Audits a refused admin request that no valid credential vouches for
    /// (or one over its credential's rate limit). The first refusal of a
    /// source in an interval is written at once; later ones are counted
    /// and written as one `admin.refused` row when the interval ends
    /// ([`Core::flush_refusals`], or the source's next refusal after it).
    /// The source is the client's address (with the admin id when one was
    /// verified). One log line per source and interval, at debug level;
    /// every refusal counts `unimsg_admin_refused_total`.
    pub async fn audit_refusal(&self, record: AuditRecord) {
        // Every refusal is still counted where operators alert on it.
        metrics::counter!("unimsg_admin_refused_total").increment(1);
        let write = self
            .refusals
            .count(self.clock.now(), self.refusal_interval(), record);
        if let Some(summary) = write.summary {
            self.audit(summary).await;
        }
        if let Some(first) = write.first {
            tracing::debug!(
                ip = first.ip.as_deref().unwrap_or("unknown"),
                outcome = %first.outcome,
                "refused an admin request; further refusals from this source are counted until the interval ends"
            );
            let alert = unimsg_proto::hooks::SecurityAlertData {
                alert: unimsg_proto::hooks::AlertKind::AdminCredentialRefused,
                user_id: None,
                ip: first.ip.clone(),
                detail: Some(format!("{} (actor {})", first.outcome, first.actor)),
            };
            self.emit(unimsg_proto::hooks::HookEventType::SecurityAlert, &alert)
                .await;
            self.audit(first).await;
        }
    }

    /// Writes the `admin.refused` row of every source whose interval has
    /// ended. Called by a periodic task of the server.
    pub async fn flush_refusals(&self) {
        self.flush(Sources::Ended).await;
    }

    /// Writes the `admin.refused` row of every source, ended or not (at
    /// shutdown).
    pub async fn flush_all_refusals(&self) {
        self.flush(Sources::All).await;
    }

    async fn flush(&self, which: Sources) {
        let ended = self
            .refusals
            .take(self.clock.now(), self.refusal_interval(), which);
        for summary in ended {
            tracing::info!(
                ip = summary.ip.as_deref().unwrap_or("unknown"),
                count = summary.count.unwrap_or(0),
                "refused admin requests from one source"
            );
            self.audit(summary).await;
        }
    }

    /// Appends an audit entry. A failure is logged, not returned: the
    /// action it records has already happened.
    pub async fn audit(&self, record: AuditRecord) {
        let content = match serde_json::to_string(&record) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "cannot encode an audit record");
                return;
            }
        };
        let draft = AuditDraft {
            at: self.clock.now(),
            content,
        };
        if let Err(error) = self.store.append_audit(draft, chain).await {
            tracing::error!(%error, action = %record.action, "cannot append to the audit log");
        }
    }

    /// `GET /v1/admin/audit`
    /// `GET /v1/admin/audit/head`
    pub async fn audit_head(&self) -> Result<unimsg_proto::admin::AuditHead> {
        let (seq, hash) = self
            .store
            .audit_head()
            .await?
            .map_or((0, [0u8; 32]), |row| (row.id, row.hash));
        let head = head_text(seq, &hash);
        Ok(unimsg_proto::admin::AuditHead {
            seq,
            hash: head
                .split_once(':')
                .map(|(_, h)| h.to_owned())
                .unwrap_or_default(),
            head,
        })
    }

    pub async fn audit_page(&self, query: AuditQuery) -> Result<AuditPage> {
        let limit = query.limit.clamp(1, 1000);
        let rows = self
            .store
            .audit_entries(AuditQuery { limit, ..query })
            .await?;
        let next_after = if rows.len() == limit as usize {
            rows.last().map(|r| r.id)
        } else {
            None
        };
        let entries = rows
            .into_iter()
            .map(|r| {
                let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(r.at_ms) * 1_000_000,
                )
                .map_err(|e| CoreError::Internal(e.to_string()))?;
                let record = serde_json::from_str(&r.content)
                    .unwrap_or(serde_json::Value::String(r.content));
                Ok(AuditEntry {
                    id: r.id,
                    at,
                    record,
                    hash: hex(&r.hash),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AuditPage {
            entries,
            next_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, prev: [u8; 32], content: &str) -> AuditRow {
        let hash = chain(&prev, &audit_bytes(id, 7, content));
        AuditRow {
            id,
            at_ms: 7,
            content: content.into(),
            prev_hash: prev,
            hash,
        }
    }

    fn log(n: u64) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for id in 1..=n {
            let prev = rows.last().map_or([0; 32], |r| r.hash);
            rows.push(row(id, prev, &format!("entry {id}")));
        }
        rows
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify((0, [0; 32]), &log(5)).map(|p| p.0), Ok(5));
    }

    #[test]
    fn edits_removals_and_reorders_are_named() {
        let mut edited = log(5);
        edited[2].content = "entry 3, edited".into();
        assert_eq!(
            verify((0, [0; 32]), &edited),
            Err(ChainBreak::Altered { id: 3 })
        );

        let mut removed = log(5);
        removed.remove(3);
        assert_eq!(
            verify((0, [0; 32]), &removed),
            Err(ChainBreak::Removed {
                expected: 4,
                found: 5
            })
        );

        // Removing the entry and renumbering the rest still breaks the link.
        let mut renumbered = log(5);
        renumbered.remove(1);
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.id = i as u64 + 1;
        }
        assert_eq!(
            verify((0, [0; 32]), &renumbered),
            Err(ChainBreak::Unlinked { id: 2 })
        );

        // Removing the newest entries cannot be seen from the chain alone;
        // an edit with a recomputed hash is caught by the next entry's link.
        let mut rehashed = log(5);
        rehashed[1].content = "forged".into();
        rehashed[1].hash = chain(&rehashed[1].prev_hash, &audit_bytes(2, 7, "forged"));
        assert_eq!(
            verify((0, [0; 32]), &rehashed),
            Err(ChainBreak::Unlinked { id: 3 })
        );
    }

    fn refusal(ip: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            action: "admin.request".into(),
            actor_kind: "admin".into(),
            actor: "-".into(),
            ip: Some(ip.into()),
            outcome: outcome.into(),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn refusals_write_the_first_of_an_interval_and_then_one_count() {
        let refusals = Refusals::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let minute = time::Duration::minutes(1);
        let first = refusals.count(t0, minute, refusal("198.51.100.1", "401"));
        assert!(first.first.is_some() && first.summary.is_none());
        for i in 0..500 {
            let outcome = if i % 5 == 0 { "429" } else { "401" };
            let w = refusals.count(t0, minute, refusal("198.51.100.1", outcome));
            assert!(w.first.is_none() && w.summary.is_none(), "refusal {i}");
        }
        let other = refusals.count(t0, minute, refusal("198.51.100.2", "403"));
        assert!(other.first.is_some(), "each source has its own first row");
        assert!(
            refusals.take(t0, minute, Sources::Ended).is_empty(),
            "not ended yet"
        );

        // The source's next refusal after the interval writes the summary
        // and starts a new interval with itself.
        let later = t0 + minute;
        let w = refusals.count(later, minute, refusal("198.51.100.1", "401"));
        let summary = w.summary.expect("no summary");
        assert_eq!(summary.action, "admin.refused");
        assert_eq!(summary.count, Some(500));
        assert_eq!(summary.ip.as_deref(), Some("198.51.100.1"));
        assert!(
            summary
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("401: 400, 429: 100")),
            "{summary:?}"
        );
        assert!(w.first.is_some());

        // The periodic flush writes nothing for a source with only its first
        // row, and a count for one with more.
        let _ = refusals.count(later, minute, refusal("198.51.100.1", "401"));
        let ended = refusals.take(later + minute, minute, Sources::Ended);
        assert_eq!(
            ended.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![Some(1)]
        );
        assert!(
            refusals
                .take(later + minute, minute, Sources::All)
                .is_empty()
        );
    }

    #[test]
    fn refusals_from_too_many_sources_are_counted_together() {
        let refusals = Refusals::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let minute = time::Duration::minutes(1);
        let mut firsts = 0;
        for i in 0..MAX_SOURCES + 1000 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            if refusals
                .count(t0, minute, refusal(&ip, "401"))
                .first
                .is_some()
            {
                firsts += 1;
            }
        }
        assert_eq!(
            firsts,
            MAX_SOURCES + 1,
            "one row per source, one for the rest"
        );
        let len = refusals.0.lock().len();
        assert_eq!(len, MAX_SOURCES + 1);
        let ended = refusals.take(t0, minute, Sources::All);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].ip.as_deref(), Some(OVERFLOW));
        assert_eq!(ended[0].count, Some(999));
    }
}
