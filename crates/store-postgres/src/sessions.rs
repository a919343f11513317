//! The `Sessions` trait on PostgreSQL: login sessions, their refresh
//! tokens and revocations with their inbox events.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use unimsg_proto::{EventType, SessionId, UserId};
use unimsg_store::sql::{SESSION_COLUMNS, ms, read_session, refresh_check, user_id};
use unimsg_store::{
    EventBody, HookDraft, NewRefreshToken, NewSession, RefreshOutcome, Result, Revocation, Session,
    Sessions, StoreError, StoredEvent, TokenHash,
};

use crate::{
    DbResult, InboxRow, PgStore, UnknownUsers, append_inbox, broadcast_clock, column, read, unique,
};

async fn session_by_id<C: GenericClient>(client: &C, id: &str) -> DbResult<Option<Session>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1"
        ))
        .await?;
    client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|row| read(&row, read_session))
        .transpose()
}

/// Revokes the sessions that are still active and appends one
/// `session.revoked` event for each, in input order. A session listed
/// twice is revoked by its first entry.
async fn revoke(tx: &Transaction<'_>, revocations: &[Revocation]) -> DbResult<Vec<StoredEvent>> {
    if revocations.is_empty() {
        return Ok(Vec::new());
    }
    // Lock order: the clock before anything else (append_inbox takes it
    // again, a no-op then).
    broadcast_clock(tx).await?;
    let mut seen = HashSet::with_capacity(revocations.len());
    let firsts: Vec<&Revocation> = revocations
        .iter()
        .filter(|r| seen.insert(r.session_id.as_str()))
        .collect();
    let ids: Vec<&str> = firsts.iter().map(|r| r.session_id.as_str()).collect();
    let ats: Vec<i64> = firsts.iter().map(|r| ms(r.at)).collect();
    let reasons: Vec<&str> = firsts.iter().map(|r| r.reason.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE sessions s SET revoked_at = t.at, revoke_reason = t.reason \
             FROM unnest($1::text[], $2::int8[], $3::text[]) AS t(id, at, reason) \
             WHERE s.session_id = t.id AND s.revoked_at IS NULL \
             RETURNING s.session_id, s.user_id",
        )
        .await?;
    let mut owners: HashMap<String, UserId> = HashMap::new();
    for row in tx.query(&stmt, &[&ids, &ats, &reasons]).await? {
        owners.insert(column(&row, 0)?, user_id(column(&row, 1)?)?);
    }
    let revoked: Vec<(&Revocation, &UserId)> = firsts
        .iter()
        .filter_map(|r| owners.get(r.session_id.as_str()).map(|owner| (*r, owner)))
        .collect();
    let rows: Vec<InboxRow<'_>> = revoked
        .iter()
        .map(|(r, owner)| InboxRow {
            user: owner,
            kind: EventType::SessionRevoked,
            message_id: None,
            data: Some(r.event_data.as_str()),
            at: r.at,
        })
        .collect();
    let seqs = append_inbox(tx, &rows, UnknownUsers::Fail).await?;
    for (r, _) in &revoked {
        crate::webhooks::enqueue_all(tx, &r.hooks).await?;
    }
    revoked
        .into_iter()
        .zip(seqs)
        .map(|((r, owner), seq)| {
            Ok(StoredEvent {
                user_id: owner.clone(),
                seq: seq.ok_or(StoreError::NotFound("user"))?,
                kind: EventType::SessionRevoked,
                at: r.at,
                body: EventBody::Data(r.event_data.clone()),
            })
        })
        .collect()
}

/// Inserts a refresh token of `session`; a token hash that exists is
/// `Conflict("refresh token")`.
async fn insert_refresh(
    tx: &Transaction<'_>,
    token: &NewRefreshToken,
    session: &str,
) -> DbResult<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[&&token.hash.0[..], &session, &ms(token.expires_at)],
    )
    .await
    .map_err(|e| unique(e, "refresh token"))?;
    Ok(())
}

#[async_trait]
impl Sessions for PgStore {
    async fn open_session(
        &self,
        session: NewSession,
        refresh: NewRefreshToken,
        kick: Vec<Revocation>,
        hooks: Vec<HookDraft>,
    ) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| {
            // Revocations first: they lock the user row FOR UPDATE before
            // the new session's foreign key takes it FOR KEY SHARE, so two
            // sign-ins of one user never both hold the weaker lock and wait
            // to upgrade it.
            let events = revoke(tx, &kick).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sessions (session_id, user_id, platform, device_id, created_at, ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &session.session_id.as_str(),
                    &session.user_id.as_str(),
                    &session.platform.as_str(),
                    &session.device_id,
                    &ms(session.created_at),
                    &session.ip,
                    &session.user_agent,
                ],
            )
            .await
            .map_err(|e| {
                // The embedded store reports any constraint (an unknown user
                // too) as this conflict.
                if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                    StoreError::Conflict("session_id")
                } else {
                    unique(e, "session_id")
                }
            })?;
            insert_refresh(tx, &refresh, session.session_id.as_str()).await?;
            crate::webhooks::enqueue_all(tx, &hooks).await?;
            Ok(events)
        })
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>> {
        connected!(self, |client| session_by_id(&client, id.as_str()).await)
    }

    async fn is_new_place(
        &self,
        user: &UserId,
        device_id: Option<&str>,
        ip: Option<&str>,
    ) -> Result<bool> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM sessions WHERE user_id = $1), \
                     EXISTS(SELECT 1 FROM sessions WHERE user_id = $1 AND \
                     (($2::text IS NOT NULL AND device_id = $2::text) OR ($3::text IS NOT NULL AND ip = $3::text)))",
                )
                .await?;
            let row = client
                .query_one(&stmt, &[&user.as_str(), &device_id, &ip])
                .await?;
            let (any, known): (bool, bool) = (column(&row, 0)?, column(&row, 1)?);
            Ok(any && !known)
        })
    }

    async fn active_sessions(&self, user: &UserId) -> Result<Vec<Session>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                     ORDER BY created_at, session_id"
                ))
                .await?;
            client
                .query(&stmt, &[&user.as_str()])
                .await?
                .iter()
                .map(|r| read(r, read_session))
                .collect()
        })
    }

    async fn revoke_sessions(&self, revocations: Vec<Revocation>) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| revoke(tx, &revocations).await)
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RefreshOutcome> {
        transaction!(self, |tx| {
            // FOR UPDATE: of two nodes exchanging the same token at once,
            // the second waits, then sees it rotated (reuse).
            let find = tx
                .prepare_cached(
                    "SELECT session_id, expires_at, rotated_at FROM refresh_tokens \
                     WHERE token_hash = $1 FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&find, &[&&presented.0[..]]).await? else {
                return Ok(RefreshOutcome::Invalid);
            };
            let sid: String = column(&row, 0)?;
            let expires_at: i64 = column(&row, 1)?;
            let rotated_at: Option<i64> = column(&row, 2)?;
            let found = session_by_id(tx, &sid).await?;
            let session = match refresh_check(found, expires_at, rotated_at.is_some(), now) {
                RefreshOutcome::Rotated(session) => session,
                answer => return Ok(answer),
            };
            let retire = tx
                .prepare_cached("UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1")
                .await?;
            tx.execute(&retire, &[&&presented.0[..], &ms(now)]).await?;
            insert_refresh(tx, &next, &sid).await?;
            Ok(RefreshOutcome::Rotated(session))
        })
    }
}
