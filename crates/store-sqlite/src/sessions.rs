//! The `Sessions` trait on SQLite: login sessions, their refresh tokens
//! and revocations with their inbox events.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use unimsg_proto::{EventType, SessionId, UserId};
use unimsg_store::sql::{SESSION_COLUMNS, ms, read_session, refresh_check, user_id};
use unimsg_store::{
    EventBody, HookDraft, NewRefreshToken, NewSession, RefreshOutcome, Result, Revocation, Session,
    Sessions, StoredEvent, TokenHash,
};

use crate::inbox::insert_event;
use crate::{Cached, DbResult, SqliteStore, all, first, map_unique};

fn session_by_id(conn: &Connection, id: &str) -> DbResult<Option<Session>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"
    ))?;
    first(&mut stmt, [id], read_session)
}

/// Revokes the sessions that are still active and appends one
/// `session.revoked` event for each.
fn revoke(conn: &Connection, revocations: Vec<Revocation>) -> DbResult<Vec<StoredEvent>> {
    let mut out = Vec::new();
    for r in revocations {
        let owner: Option<String> = conn
            .query_row_cached(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE session_id = ?1 AND revoked_at IS NULL RETURNING user_id",
                params![r.session_id.as_str(), ms(r.at), r.reason],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(owner) = owner {
            crate::webhooks::enqueue_all(conn, &r.hooks)?;
            let owner = user_id(owner)?;
            let seq = insert_event(
                conn,
                &owner,
                EventType::SessionRevoked,
                None,
                Some(&r.event_data),
                r.at,
            )?;
            out.push(StoredEvent {
                user_id: owner,
                seq,
                kind: EventType::SessionRevoked,
                at: r.at,
                body: EventBody::Data(r.event_data),
            });
        }
    }
    Ok(out)
}

#[async_trait]
impl Sessions for SqliteStore {
    async fn open_session(
        &self,
        session: NewSession,
        refresh: NewRefreshToken,
        kick: Vec<Revocation>,
        hooks: Vec<HookDraft>,
    ) -> Result<Vec<StoredEvent>> {
        self.write(move |conn| {
            conn.execute_cached(
                "INSERT INTO sessions (session_id, user_id, platform, device_id, created_at, ip, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    session.session_id.as_str(),
                    session.user_id.as_str(),
                    session.platform.as_str(),
                    session.device_id,
                    ms(session.created_at),
                    session.ip,
                    session.user_agent
                ],
            )
            .map_err(|e| map_unique(e, "session_id"))?;
            conn.execute_cached(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![&refresh.hash.0[..], session.session_id.as_str(), ms(refresh.expires_at)],
            )
            .map_err(|e| map_unique(e, "refresh token"))?;
            crate::webhooks::enqueue_all(conn, &hooks)?;
            revoke(conn, kick)
        })
        .await
    }

    async fn is_new_place(
        &self,
        user: &UserId,
        device_id: Option<&str>,
        ip: Option<&str>,
    ) -> Result<bool> {
        let (user, device_id, ip) = (
            user.clone(),
            device_id.map(str::to_owned),
            ip.map(str::to_owned),
        );
        self.read(move |conn| {
            let (any, known): (bool, bool) = conn.query_row_cached(
                "SELECT EXISTS(SELECT 1 FROM sessions WHERE user_id = ?1), \
                     EXISTS(SELECT 1 FROM sessions WHERE user_id = ?1 AND \
                     ((?2 IS NOT NULL AND device_id = ?2) OR (?3 IS NOT NULL AND ip = ?3)))",
                params![user.as_str(), device_id, ip],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(any && !known)
        })
        .await
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>> {
        let id = id.clone();
        self.read_point(move |conn| session_by_id(conn, id.as_str()))
            .await
    }

    async fn active_sessions(&self, user: &UserId) -> Result<Vec<Session>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL \
                     ORDER BY created_at, session_id"
            ))?;
            all(&mut stmt, [user.as_str()], read_session)
        })
        .await
    }

    async fn revoke_sessions(&self, revocations: Vec<Revocation>) -> Result<Vec<StoredEvent>> {
        self.write(move |conn| revoke(conn, revocations)).await
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RefreshOutcome> {
        let presented = presented.clone();
        self.write(move |conn| {
            let found: Option<(String, i64, Option<i64>)> = conn
                .query_row_cached(
                    "SELECT session_id, expires_at, rotated_at FROM refresh_tokens WHERE token_hash = ?1",
                    [&presented.0[..]],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((sid, expires_at, rotated_at)) = found else {
                return Ok(RefreshOutcome::Invalid);
            };
            let found = session_by_id(conn, &sid)?;
            let session = match refresh_check(found, expires_at, rotated_at.is_some(), now) {
                RefreshOutcome::Rotated(session) => session,
                answer => return Ok(answer),
            };
            conn.execute_cached(
                "UPDATE refresh_tokens SET rotated_at = ?2 WHERE token_hash = ?1",
                params![&presented.0[..], ms(now)],
            )?;
            conn.execute_cached(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![&next.hash.0[..], sid, ms(next.expires_at)],
            )
            .map_err(|e| map_unique(e, "refresh token"))?;
            Ok(RefreshOutcome::Rotated(session))
        })
        .await
    }
}
