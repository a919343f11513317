//! The tamper-evident audit log: every admin request, login, logout, token
//! mint and revocation, each entry chained to the one before by a keyed
//! hash.
//!
//! `hash(n) = HMAC-SHA256(audit key, hash(n-1) ‖ "n\nat_ms\ncontent")`,
//! with 32 zero bytes before the first entry. The audit key is stored
//! wrapped by the master key ([`AuditKey`]). Editing, removing or
//! reordering any entry breaks every hash after it, and without the key
//! nobody can compute them again; [`verify`] names the first entry that
//! does not fit. An exported head ([`head_text`]) shows the removal of
//! the newest entries too.
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

/// The first chain function, before the chain was keyed: SHA-256 over
/// the previous hash and the entry's bytes. Entries an older server wrote
/// this way are accepted only before the first keyed entry, and only if
/// written before the audit key existed.
fn legacy_chain(prev: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev);
    ctx.update(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The store row that holds the audit key, wrapped by the master key like
/// the data keys (data keys are numbered below it, signing keys above).
pub const AUDIT_KEY_ID: u32 = 0xE000_0000;

/// The key that chains the audit log: `hash(n) = HMAC-SHA256(key,
/// hash(n-1) ‖ bytes(n))`. It is stored only wrapped by the master key,
/// which never touches the database, so whoever can write the database
/// but does not hold the master key cannot recompute the chain after an
/// edit.
pub struct AuditKey {
    key: aws_lc_rs::hmac::Key,
    /// When the key was made (Unix ms): later entries must be keyed.
    since_ms: i64,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

impl AuditKey {
    /// Unwraps the stored audit key, or makes and stores one. Nodes
    /// starting together agree: whoever stores it second reads the
    /// winner's.
    /// Answers whether this call stored it.
    pub async fn load_or_create(
        store: &dyn unimsg_store::DataKeys,
        master: &crate::keys::MasterKey,
    ) -> Result<(Self, bool), crate::keys::KeyError> {
        if let Some(key) = Self::load(store, master).await? {
            return Ok((key, false));
        }
        let raw = crate::keys::random_bytes::<32>()?;
        let wrapped = crate::keys::wrap_key(master, AUDIT_KEY_ID, &raw)?;
        let stored = match store.insert_data_key(wrapped).await {
            Ok(()) => true,
            Err(unimsg_store::StoreError::Conflict(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let key = Self::load(store, master)
            .await?
            .ok_or(crate::keys::KeyError::Crypto)?;
        Ok((key, stored))
    }

    /// The stored audit key, if there is one.
    pub async fn load(
        store: &dyn unimsg_store::DataKeys,
        master: &crate::keys::MasterKey,
    ) -> Result<Option<Self>, crate::keys::KeyError> {
        let Some(row) = store
            .data_keys()
            .await?
            .into_iter()
            .find(|w| w.key_id == AUDIT_KEY_ID)
        else {
            return Ok(None);
        };
        let raw = crate::keys::unwrap_key(master, &row)?;
        Ok(Some(Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &raw),
            since_ms: unimsg_store::sql::ms(row.created_at),
        }))
    }

    /// The keyed chain function.
    pub fn chain(&self, prev: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.key);
        ctx.update(prev);
        ctx.update(bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// The chain function the store appends with.
pub fn chain_fn(key: std::sync::Arc<AuditKey>) -> unimsg_store::ChainFn {
    std::sync::Arc::new(move |prev: &[u8; 32], bytes: &[u8]| key.chain(prev, bytes))
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
    #[error(
        "entry {id} was altered: it is not chained with the audit key, so the log was rewritten from there on without it"
    )]
    Unkeyed { id: u64 },
}

/// How far a walk of the chain got: the last entry checked, its hash, and
/// whether it was keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub id: u64,
    pub hash: [u8; 32],
    keyed: bool,
}

impl Position {
    /// Before the first entry.
    pub const START: Position = Position {
        id: 0,
        hash: [0; 32],
        keyed: false,
    };

    /// The position after `row`, taken as checked (the newest entry a
    /// node verified before).
    fn after(row: &AuditRow, key: &AuditKey) -> Self {
        Position {
            id: row.id,
            hash: row.hash,
            keyed: key.chain(
                &row.prev_hash,
                &audit_bytes(row.id, row.at_ms, &row.content),
            ) == row.hash,
        }
    }
}

/// Checks rows (in id order, continuing from `prev`) and returns the new
/// position. An entry must be keyed, except entries of an older server
/// before the first keyed one, written before the key existed.
pub fn verify(key: &AuditKey, prev: Position, rows: &[AuditRow]) -> Result<Position, ChainBreak> {
    let mut at = prev;
    for row in rows {
        if row.id != at.id + 1 {
            return Err(ChainBreak::Removed {
                expected: at.id + 1,
                found: row.id,
            });
        }
        if row.prev_hash != at.hash {
            return Err(ChainBreak::Unlinked { id: row.id });
        }
        let bytes = audit_bytes(row.id, row.at_ms, &row.content);
        let keyed = key.chain(&at.hash, &bytes) == row.hash;
        if !keyed {
            if legacy_chain(&at.hash, &bytes) != row.hash {
                return Err(ChainBreak::Altered { id: row.id });
            }
            if at.keyed || row.at_ms >= key.since_ms {
                return Err(ChainBreak::Unkeyed { id: row.id });
            }
        }
        at = Position {
            id: row.id,
            hash: row.hash,
            keyed,
        };
    }
    Ok(at)
}

/// An exported head, `SEQ:HEX` (what `GET /v1/admin/audit/head` and
/// `unimsg audit verify` print).
pub fn head_text(seq: u64, hash: &[u8; 32]) -> String {
    format!("{seq}:{}", hex(hash))
}

/// Parses an exported head, `SEQ:HEX`.
pub fn parse_head(text: &str) -> Option<(u64, [u8; 32])> {
    let (seq, hex) = text.trim().split_once(':')?;
    let seq: u64 = seq.parse().ok()?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((seq, hash))
}

/// Walks the whole log of a store, and with `expected` (an exported head)
/// checks that its entry is still there unchanged, so that removing the
/// newest entries is found too; returns the head.
pub async fn verify_store_against(
    store: &dyn unimsg_store::Audit,
    key: &AuditKey,
    expected: Option<(u64, [u8; 32])>,
) -> Result<(u64, [u8; 32]), VerifyError> {
    let head = walk(store, key, Position::START).await?;
    if head.id > 0 && !head.keyed {
        return Err(VerifyError::Broken(ChainBreak::Unkeyed { id: head.id }));
    }
    // Head 0 is the empty log, a prefix of every log.
    if let Some((seq, hash)) = expected.filter(|(seq, _)| *seq > 0) {
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
    Ok((head.id, head.hash))
}

/// Walks the log from `from` to its end.
async fn walk(
    store: &dyn unimsg_store::Audit,
    key: &AuditKey,
    from: Position,
) -> Result<Position, VerifyError> {
    let mut position = from;
    loop {
        let rows = store
            .audit_entries(AuditQuery {
                after: position.id,
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| VerifyError::Store(e.to_string()))?;
        if rows.is_empty() {
            return Ok(position);
        }
        position = verify(key, position, &rows).map_err(VerifyError::Broken)?;
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

/// What this node's periodic audit check knows.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// Verified up to here (`None`: from the start next time).
    position: Option<Position>,
    /// The break last alerted on, so that it is alerted once.
    reported: Option<String>,
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
            self.alert(alert).await;
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
        if let Err(error) = self
            .store
            .append_audit(draft, self.audit_chain.clone())
            .await
        {
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

    /// After the audit key was made for a log an older server wrote: an
    /// entry that says so, the first keyed one (the older entries stay
    /// chained by plain SHA-256 before it).
    pub async fn audit_key_created(&self) {
        match self.store.audit_head().await {
            Ok(Some(_)) => {
                self.audit(AuditRecord {
                    action: "audit.keyed".into(),
                    actor_kind: "system".into(),
                    actor: "-".into(),
                    outcome: "ok".into(),
                    detail: Some("the audit chain is keyed from this entry on".into()),
                    ..AuditRecord::default()
                })
                .await;
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "cannot read the audit log's head"),
        }
    }

    /// `GET /v1/admin/audit/verify`: walks the whole chain (one walk at a
    /// time on a node; a second caller waits) and checks `expected`, an
    /// exported head. A broken chain raises `audit_chain_broken`.
    pub async fn verify_audit_log(
        &self,
        expected: Option<(u64, [u8; 32])>,
    ) -> Result<unimsg_proto::admin::AuditVerification> {
        let mut checked = self.audit_checked.lock().await;
        match verify_store_against(&*self.store, &self.audit_key, expected).await {
            Ok((seq, hash)) => Ok(unimsg_proto::admin::AuditVerification {
                intact: true,
                head: Some(head_text(seq, &hash)),
                entries: Some(seq),
                broken: None,
            }),
            Err(VerifyError::Store(e)) => Err(CoreError::Unavailable(e)),
            Err(broken) => {
                let text = broken.to_string();
                self.chain_broken(&mut checked, &text).await;
                Ok(unimsg_proto::admin::AuditVerification {
                    intact: false,
                    head: None,
                    entries: None,
                    broken: Some(text),
                })
            }
        }
    }

    /// The periodic check (`admin.audit_verify_interval_secs`): verifies
    /// the entries appended since this node's last check, and that the
    /// last checked entry is still the same. A break raises
    /// `audit_chain_broken` once; the check then starts over from the
    /// first entry, so a repaired log is verified whole again.
    pub async fn check_audit_chain(&self) {
        let mut checked = self.audit_checked.lock().await;
        let from = match checked.position {
            None => Ok(Position::START),
            Some(last) => self.still_there(last).await,
        };
        let walked = match from {
            Ok(from) => walk(&*self.store, &self.audit_key, from).await,
            Err(e) => Err(e),
        };
        match walked {
            Ok(position) => {
                checked.position = Some(position);
                checked.reported = None;
                self.export_head(position);
            }
            Err(VerifyError::Store(error)) => {
                tracing::warn!(%error, "cannot verify the audit log now");
            }
            Err(broken) => {
                checked.position = None;
                self.chain_broken(&mut checked, &broken.to_string()).await;
            }
        }
    }

    /// Writes a verified head to `admin.audit_head_file`, if set (a new
    /// file renamed over the old one, so a reader never sees half).
    fn export_head(&self, head: Position) {
        let path = &self.config.admin.audit_head_file;
        if path.as_os_str().is_empty() {
            return;
        }
        let next = path.with_extension("partial");
        let written = std::fs::write(&next, format!("{}\n", head_text(head.id, &head.hash)))
            .and_then(|()| std::fs::rename(&next, path));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot write the audit head file");
        }
    }

    /// `last` as it was verified, if its entry is unchanged.
    async fn still_there(&self, last: Position) -> Result<Position, VerifyError> {
        if last.id == 0 {
            return Ok(last);
        }
        let rows = self
            .store
            .audit_entries(AuditQuery {
                after: last.id - 1,
                limit: 1,
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| VerifyError::Store(e.to_string()))?;
        match rows.first() {
            Some(row) if row.id == last.id && row.hash == last.hash => {
                Ok(Position::after(row, &self.audit_key))
            }
            Some(row) if row.id == last.id => {
                Err(VerifyError::Broken(ChainBreak::Altered { id: last.id }))
            }
            _ => Err(VerifyError::HeadGone(last.id)),
        }
    }

    /// Raises `audit_chain_broken`, once for the same break.
    async fn chain_broken(&self, checked: &mut Checked, why: &str) {
        if checked.reported.as_deref() == Some(why) {
            return;
        }
        checked.reported = Some(why.to_owned());
        self.alert(unimsg_proto::hooks::SecurityAlertData {
            alert: unimsg_proto::hooks::AlertKind::AuditChainBroken,
            user_id: None,
            ip: None,
            detail: Some(why.to_owned()),
        })
        .await;
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

    /// A key made at `since_ms`.
    fn key(since_ms: i64) -> AuditKey {
        AuditKey {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[7; 32]),
            since_ms,
        }
    }

    /// Entries at time 7 chained by `f`, continuing after `before`.
    fn chained(
        before: &[AuditRow],
        ids: std::ops::RangeInclusive<u64>,
        f: impl Fn(&[u8; 32], &[u8]) -> [u8; 32],
    ) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = before.to_vec();
        for id in ids {
            let prev = rows.last().map_or([0; 32], |r| r.hash);
            let content = format!("entry {id}");
            let hash = f(&prev, &audit_bytes(id, 7, &content));
            rows.push(AuditRow {
                id,
                at_ms: 7,
                content,
                prev_hash: prev,
                hash,
            });
        }
        rows
    }

    fn log(k: &AuditKey, n: u64) -> Vec<AuditRow> {
        chained(&[], 1..=n, |p, b| k.chain(p, b))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let k = key(0);
        assert_eq!(
            verify(&k, Position::START, &log(&k, 5)).map(|p| (p.id, p.keyed)),
            Ok((5, true))
        );
    }

    #[test]
    fn edits_removals_and_reorders_are_named() {
        let k = key(0);
        let mut edited = log(&k, 5);
        edited[2].content = "entry 3, edited".into();
        assert_eq!(
            verify(&k, Position::START, &edited),
            Err(ChainBreak::Altered { id: 3 })
        );

        let mut removed = log(&k, 5);
        removed.remove(3);
        assert_eq!(
            verify(&k, Position::START, &removed),
            Err(ChainBreak::Removed {
                expected: 4,
                found: 5
            })
        );

        // Removing the entry and renumbering the rest still breaks the link.
        let mut renumbered = log(&k, 5);
        renumbered.remove(1);
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.id = i as u64 + 1;
        }
        assert_eq!(
            verify(&k, Position::START, &renumbered),
            Err(ChainBreak::Unlinked { id: 2 })
        );

        // An edit with a recomputed hash is caught by the next entry's link.
        let mut rehashed = log(&k, 5);
        rehashed[1].content = "forged".into();
        rehashed[1].hash = k.chain(&rehashed[1].prev_hash, &audit_bytes(2, 7, "forged"));
        assert_eq!(
            verify(&k, Position::START, &rehashed),
            Err(ChainBreak::Unlinked { id: 3 })
        );
    }

    #[test]
    fn a_chain_recomputed_without_the_key_is_refused() {
        let k = key(0);
        // Everything chained again with the public formula: the entries
        // were written after the key existed, so they must be keyed.
        let forged = chained(&[], 1..=5, legacy_chain);
        assert_eq!(
            verify(&k, Position::START, &forged),
            Err(ChainBreak::Unkeyed { id: 1 })
        );
        // Or from entry 3 on, after keyed entries.
        let tail = chained(&log(&k, 2), 3..=5, legacy_chain);
        assert_eq!(
            verify(&k, Position::START, &tail),
            Err(ChainBreak::Unkeyed { id: 3 })
        );
        // Another key does not verify either.
        let other = AuditKey {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[8; 32]),
            since_ms: 0,
        };
        assert_eq!(
            verify(&other, Position::START, &log(&k, 2)),
            Err(ChainBreak::Altered { id: 1 })
        );
    }

    #[test]
    fn an_older_servers_entries_stay_valid_before_the_first_keyed_one() {
        // The key was made after the old entries (at time 7) were written.
        let k = key(100);
        let upgraded = chained(&chained(&[], 1..=3, legacy_chain), 4..=5, |p, b| {
            k.chain(p, b)
        });
        assert_eq!(
            verify(&k, Position::START, &upgraded).map(|p| (p.id, p.keyed)),
            Ok((5, true))
        );
        // Still, a legacy entry after a keyed one is not.
        let mixed = chained(&upgraded, 6..=6, legacy_chain);
        assert_eq!(
            verify(&k, Position::START, &mixed),
            Err(ChainBreak::Unkeyed { id: 6 })
        );
        // And a whole log of legacy entries ends unkeyed: the walk
        // reports it (`verify_store_against` refuses such a head).
        let old = chained(&[], 1..=3, legacy_chain);
        assert_eq!(
            verify(&k, Position::START, &old).map(|p| p.keyed),
            Ok(false)
        );
    }

    #[test]
    fn heads_parse_back() {
        let hash = [0xab; 32];
        assert_eq!(parse_head(&head_text(42, &hash)), Some((42, hash)));
        assert_eq!(parse_head("42:abc"), None);
        assert_eq!(parse_head("x:00"), None);
        assert_eq!(parse_head(&format!("1:{}", "zz".repeat(32))), None);
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
