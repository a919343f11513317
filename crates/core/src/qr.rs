//! QR-code login: a web page asks for a ticket, shows its QR code (or its
//! short code) and waits; a logged-in phone scans it, sees who is asking,
//! and confirms or cancels; the page receives its own new session.
//!
//! A ticket is `pending → scanned → confirmed | cancelled | expired`,
//! single-use, valid for `auth.qr_ttl_secs`.
//!
//! Only the page that created a ticket can receive its tokens. Creating a
//! ticket issues a random **page secret** (32 bytes) that is answered once,
//! to that page, and kept only as its SHA-256. Listening for the ticket's
//! events needs the secret, and so does getting the same ticket again: the
//! page asking again with its secret (and the same device) while the ticket
//! is open gets the same ticket and code (seed 003's device binding). The
//! device id is a hint for the session that will open, never a credential:
//! naming another page's device id gets a new ticket of one's own. The
//! ticket id and the short code are public (the phone sees both); neither
//! lets anyone act as the page.
//!
//! Tickets are short-lived shared state behind [`QrTickets`]; one node
//! keeps them in memory, a cluster shares them.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use time::OffsetDateTime;
use tokio::sync::broadcast;
use unimsg_proto::api::TokenPair;
use unimsg_proto::{Platform, SessionId, UserId};

use crate::Core;
use crate::auth::{AuthContext, ClientInfo};
use crate::error::{CoreError, Result};
use crate::keys::OpaqueToken;
use crate::limits::Limit;

/// Characters of the human code: no 0/O, 1/I/L, so it can be read aloud and typed.
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const CODE_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketState {
    Pending,
    Scanned { by: UserId, display_name: String },
    Confirmed,
    Cancelled,
    Expired,
}

impl TicketState {
    pub fn is_open(&self) -> bool {
        matches!(self, TicketState::Pending | TicketState::Scanned { .. })
    }
}

/// A login ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    pub ticket_id: String,
    pub code: String,
    /// Hex SHA-256 of the page secret: the proof of being the page that
    /// created the ticket.
    pub page_hash: String,
    pub platform: Platform,
    pub device_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub state: TicketState,
}

/// What the waiting page hears (serializable, so that a cluster can
/// carry it between nodes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum QrEvent {
    Scanned { display_name: String },
    Confirmed(Box<TokenPair>),
    Cancelled,
    Expired,
}

/// A change to a ticket: edits it and names the event to announce.
pub type TicketChange<'a> = dyn FnMut(&mut Ticket) -> Result<Option<QrEvent>> + Send + 'a;

/// Where tickets live while they are valid. Errors mean the shared store
/// cannot be reached.
#[async_trait]
pub trait QrTickets: Send + Sync {
    /// The open ticket whose page secret hashes to `page_hash`, if any
    /// (how a page gets its own ticket again).
    async fn open_for_page(&self, page_hash: &str, now: OffsetDateTime) -> Result<Option<Ticket>>;
    async fn insert(&self, ticket: Ticket) -> Result<()>;
    async fn get(&self, ticket_id: &str) -> Result<Option<Ticket>>;
    async fn by_code(&self, code: &str) -> Result<Option<Ticket>>;
    /// Applies `change` to the ticket atomically (it may be called more
    /// than once if the ticket changed meanwhile); its `Ok(Some(event))` is
    /// announced to the ticket's listeners.
    async fn update(&self, ticket_id: &str, change: &mut TicketChange<'_>) -> Result<Ticket>;
    /// Listens for the ticket's events from now on: once this returns,
    /// every later announcement reaches the receiver.
    async fn subscribe(&self, ticket_id: &str) -> Result<Option<broadcast::Receiver<QrEvent>>>;
}

struct Entry {
    ticket: Ticket,
    events: broadcast::Sender<QrEvent>,
}

/// The single-node ticket store. Expired tickets are dropped as new ones
/// come in, so the map holds only what is still relevant.
#[derive(Default)]
pub struct MemoryTickets {
    inner: Mutex<Tickets>,
}

#[derive(Default)]
struct Tickets {
    by_id: HashMap<String, Entry>,
    by_code: HashMap<String, String>,
    by_page: HashMap<String, String>,
}

impl std::fmt::Debug for MemoryTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryTickets")
    }
}

impl Tickets {
    fn sweep(&mut self, now: OffsetDateTime) {
        // Keep closed tickets a little past expiry so late listeners learn the outcome.
        let dead: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, e)| e.ticket.expires_at + time::Duration::minutes(1) < now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            if let Some(e) = self.by_id.remove(&id) {
                self.by_code.remove(&e.ticket.code);
                self.by_page.remove(&e.ticket.page_hash);
            }
        }
    }
}

impl MemoryTickets {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Tickets> {
        self.inner.lock()
    }
}

#[async_trait]
impl QrTickets for MemoryTickets {
    async fn open_for_page(&self, page_hash: &str, now: OffsetDateTime) -> Result<Option<Ticket>> {
        let inner = self.lock();
        let entry = inner
            .by_page
            .get(page_hash)
            .and_then(|id| inner.by_id.get(id));
        Ok(entry
            .filter(|e| e.ticket.state.is_open() && e.ticket.expires_at > now)
            .map(|e| e.ticket.clone()))
    }

    async fn insert(&self, ticket: Ticket) -> Result<()> {
        let mut inner = self.lock();
        inner.sweep(ticket.created_at);
        let (events, _) = broadcast::channel(8);
        inner
            .by_code
            .insert(ticket.code.clone(), ticket.ticket_id.clone());
        inner
            .by_page
            .insert(ticket.page_hash.clone(), ticket.ticket_id.clone());
        inner
            .by_id
            .insert(ticket.ticket_id.clone(), Entry { ticket, events });
        Ok(())
    }

    async fn get(&self, ticket_id: &str) -> Result<Option<Ticket>> {
        Ok(self.lock().by_id.get(ticket_id).map(|e| e.ticket.clone()))
    }

    async fn by_code(&self, code: &str) -> Result<Option<Ticket>> {
        let inner = self.lock();
        Ok(inner
            .by_code
            .get(code)
            .and_then(|id| inner.by_id.get(id))
            .map(|e| e.ticket.clone()))
    }

    async fn update(&self, ticket_id: &str, change: &mut TicketChange<'_>) -> Result<Ticket> {
        let mut inner = self.lock();
        let entry = inner
            .by_id
            .get_mut(ticket_id)
            .ok_or_else(|| CoreError::NotFound("ticket not found".into()))?;
        let mut next = entry.ticket.clone();
        let event = change(&mut next)?;
        entry.ticket = next.clone();
        if let Some(event) = event {
            // Nobody listening is fine: the state is kept for late listeners.
            let _ = entry.events.send(event);
        }
        Ok(next)
    }

    async fn subscribe(&self, ticket_id: &str) -> Result<Option<broadcast::Receiver<QrEvent>>> {
        Ok(self
            .lock()
            .by_id
            .get(ticket_id)
            .map(|e| e.events.subscribe()))
    }
}

fn new_code() -> Result<String> {
    let bytes =
        crate::keys::random_bytes::<CODE_LEN>().map_err(|e| CoreError::Internal(e.to_string()))?;
    // 256 is not a multiple of 31; the slight bias does not matter for a
    // code that lives five minutes and needs a logged-in user to use.
    Ok(bytes
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(*b) % CODE_ALPHABET.len()] as char)
        .collect())
}

/// Normalises a typed code: upper case, without spaces or dashes.
pub fn normalize_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// What `POST /v1/auth/qr` answers.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub ticket: Ticket,
    /// The page secret, handed only to the page that created the ticket
    /// (and again to that page when it proves it holds it).
    pub page_secret: OpaqueToken,
    pub expires_in: u64,
}

/// The hex SHA-256 a ticket keeps of its page secret.
pub fn page_hash(secret: &str) -> String {
    crate::audit::hex(&OpaqueToken(secret.to_owned()).hash().0)
}

/// Whether `secret` is the page secret of `ticket` (compared in constant time).
fn holds_secret(ticket: &Ticket, secret: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(
        page_hash(secret).as_bytes(),
        ticket.page_hash.as_bytes(),
    )
    .is_ok()
}

fn closed(state: &TicketState) -> CoreError {
    match state {
        TicketState::Confirmed => CoreError::Conflict("the ticket was already confirmed".into()),
        TicketState::Cancelled => CoreError::Gone("the ticket was cancelled".into()),
        TicketState::Expired => CoreError::Gone("the ticket expired".into()),
        _ => CoreError::Internal("ticket state".into()),
    }
}

/// A step of a QR login, for `unimsg_qr_refusals_total{step, reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrStep {
    /// The desktop page asks for a ticket.
    Create,
    /// The page listens for its ticket's events (with its secret).
    Events,
    /// The phone scans the ticket.
    Scan,
    /// The phone confirms it.
    Confirm,
    /// The phone refuses it.
    Cancel,
    /// A business system confirms it for a user.
    AdminConfirm,
}

impl QrStep {
    fn as_str(self) -> &'static str {
        match self {
            QrStep::Create => "create",
            QrStep::Events => "events",
            QrStep::Scan => "scan",
            QrStep::Confirm => "confirm",
            QrStep::Cancel => "cancel",
            QrStep::AdminConfirm => "admin_confirm",
        }
    }
}

/// Counts a refused QR step by its error code (`not_found` for a wrong
/// ticket or page secret, `gone`, `conflict`, `forbidden`,
/// `rate_limited`, …) and passes the result on.
pub fn counted<T>(step: QrStep, result: Result<T>) -> Result<T> {
    if let Err(e) = &result {
        metrics::counter!("unimsg_qr_refusals_total",
            "step" => step.as_str(), "reason" => e.label())
        .increment(1);
    }
    result
}

impl Core {
    /// `POST /v1/auth/qr`. A page that sends the secret of its open ticket
    /// (for the same platform and device) gets that ticket again; anyone
    /// else gets a new ticket and secret of their own.
    pub async fn create_qr_ticket(
        &self,
        platform: Platform,
        device_id: Option<String>,
        page_secret: Option<&str>,
        client: &ClientInfo,
    ) -> Result<NewTicket> {
        crate::auth::validate_device(device_id.as_deref())?;
        if page_secret.is_some_and(|s| s.is_empty() || s.len() > 128) {
            return Err(CoreError::BadRequest(
                "page_secret must be the secret this page was given".into(),
            ));
        }
        if let Some(ip) = &client.ip {
            self.check_limit(Limit::Qr, ip).await?;
        }
        let now = self.clock.now();
        // Found by the secret's hash, so holding the secret is proven.
        if let Some(secret) = page_secret
            && let Some(ticket) = self.qr.open_for_page(&page_hash(secret), now).await?
            && ticket.device_id == device_id
            && ticket.platform == platform
        {
            let expires_in = (ticket.expires_at - now).whole_seconds().max(0) as u64;
            return Ok(NewTicket {
                ticket,
                page_secret: OpaqueToken(secret.to_owned()),
                expires_in,
            });
        }
        let (secret, _) =
            crate::keys::new_opaque_token().map_err(|e| CoreError::Internal(e.to_string()))?;
        let ttl = self.config.auth.qr_ttl_secs.max(1);
        let mut code = new_code()?;
        while self.qr.by_code(&code).await?.is_some() {
            code = new_code()?;
        }
        let ticket = Ticket {
            ticket_id: uuid::Uuid::new_v4().simple().to_string(),
            code,
            page_hash: page_hash(&secret.0),
            platform,
            device_id,
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            created_at: now,
            expires_at: now + time::Duration::seconds(ttl as i64),
            state: TicketState::Pending,
        };
        self.qr.insert(ticket.clone()).await?;
        Ok(NewTicket {
            ticket,
            page_secret: secret,
            expires_in: ttl,
        })
    }

    /// A ticket by id, with its state brought up to date (expiry).
    pub async fn qr_ticket(&self, ticket_id: &str) -> Result<Ticket> {
        let ticket = self
            .qr
            .get(ticket_id)
            .await?
            .ok_or_else(|| CoreError::NotFound("ticket not found".into()))?;
        if ticket.state.is_open() && ticket.expires_at <= self.clock.now() {
            return self.expire_qr(ticket_id).await;
        }
        Ok(ticket)
    }

    /// Marks an open ticket expired (announcing it); returns its state.
    pub async fn expire_qr(&self, ticket_id: &str) -> Result<Ticket> {
        let now = self.clock.now();
        self.qr
            .update(ticket_id, &mut |t| {
                if t.state.is_open() && t.expires_at <= now {
                    t.state = TicketState::Expired;
                    return Ok(Some(QrEvent::Expired));
                }
                Ok(None)
            })
            .await
    }

    /// Listens for a ticket's events: only the page holding the ticket's
    /// secret may (its `confirmed` event carries the new session's tokens).
    /// A wrong or missing secret is answered like an unknown ticket, so the
    /// answer does not tell which ticket ids exist.
    pub async fn qr_events(
        &self,
        ticket_id: &str,
        page_secret: Option<&str>,
    ) -> Result<broadcast::Receiver<QrEvent>> {
        const NOT_YOURS: &str = "ticket not found (or not this page's: give its page_secret)";
        let ticket = self
            .qr
            .get(ticket_id)
            .await?
            .ok_or_else(|| CoreError::NotFound(NOT_YOURS.into()))?;
        if !page_secret.is_some_and(|s| holds_secret(&ticket, s)) {
            return Err(CoreError::NotFound(NOT_YOURS.into()));
        }
        self.qr
            .subscribe(ticket_id)
            .await?
            .ok_or_else(|| CoreError::NotFound(NOT_YOURS.into()))
    }

    /// `POST /v1/auth/qr/scan`: the phone's user claims the ticket and
    /// learns who is asking.
    pub async fn scan_qr(
        &self,
        auth: &AuthContext,
        ticket_id: Option<&str>,
        code: Option<&str>,
    ) -> Result<Ticket> {
        let found = match (ticket_id, code) {
            (Some(id), None) => self.qr.get(id).await?,
            (None, Some(code)) => self.qr.by_code(&normalize_code(code)).await?,
            _ => {
                return Err(CoreError::BadRequest(
                    "give either ticket_id or code".into(),
                ));
            }
        };
        let ticket = found.ok_or_else(|| CoreError::NotFound("ticket not found".into()))?;
        let ticket = self.qr_ticket(&ticket.ticket_id).await?;
        let user = self
            .store
            .user(&auth.user_id)
            .await?
            .ok_or_else(|| CoreError::NotFound("user not found".into()))?;
        let me = auth.user_id.clone();
        self.qr
            .update(&ticket.ticket_id, &mut |t| match &t.state {
                TicketState::Pending => {
                    t.state = TicketState::Scanned {
                        by: me.clone(),
                        display_name: user.display_name.clone(),
                    };
                    Ok(Some(QrEvent::Scanned {
                        display_name: user.display_name.clone(),
                    }))
                }
                TicketState::Scanned { by, .. } if *by == me => Ok(None),
                TicketState::Scanned { .. } => Err(CoreError::Conflict(
                    "another user scanned this ticket".into(),
                )),
                other => Err(closed(other)),
            })
            .await
    }

    async fn scanned_by(&self, ticket_id: &str, auth: &AuthContext) -> Result<Ticket> {
        let ticket = self.qr_ticket(ticket_id).await?;
        match &ticket.state {
            TicketState::Scanned { by, .. } if *by == auth.user_id => Ok(ticket),
            TicketState::Scanned { .. } | TicketState::Pending => Err(CoreError::Forbidden(
                "scan the ticket first; only its scanner can answer it".into(),
            )),
            other => Err(closed(other)),
        }
    }

    /// `POST /v1/auth/qr/{ticket_id}/confirm` by the phone that scanned it.
    pub async fn confirm_qr(&self, auth: &AuthContext, ticket_id: &str) -> Result<SessionId> {
        let ticket = self.scanned_by(ticket_id, auth).await?;
        self.complete_qr(ticket, auth.user_id.clone(), Some(&auth.session_id), "user")
            .await
    }

    /// `POST /v1/admin/qr/{ticket_id}/confirm`: a business system that
    /// verified the user elsewhere completes the ticket.
    pub async fn admin_confirm_qr(
        &self,
        admin_id: &str,
        ticket_id: &str,
        user: UserId,
    ) -> Result<SessionId> {
        let ticket = self.qr_ticket(ticket_id).await?;
        if !ticket.state.is_open() {
            return Err(closed(&ticket.state));
        }
        // Checked before the ticket is claimed, so that a refusal leaves it
        // open; `open_session` checks again.
        match self.store.user(&user).await? {
            None => return Err(CoreError::NotFound("user not found".into())),
            Some(u) if u.status == unimsg_store::UserStatus::Disabled => {
                return Err(crate::auth::disabled());
            }
            Some(_) => {}
        }
        self.complete_qr(ticket, user, None, admin_id).await
    }

    /// Opens the waiting page's session and hands it the tokens. The ticket
    /// is closed first, so two confirmations cannot both open a session.
    async fn complete_qr(
        &self,
        ticket: Ticket,
        user: UserId,
        approver_session: Option<&SessionId>,
        approver: &str,
    ) -> Result<SessionId> {
        let now = self.clock.now();
        let claimed = self
            .qr
            .update(&ticket.ticket_id, &mut |t| {
                if !t.state.is_open() {
                    return Err(closed(&t.state));
                }
                if t.expires_at <= now {
                    t.state = TicketState::Expired;
                    return Ok(Some(QrEvent::Expired));
                }
                t.state = TicketState::Confirmed;
                Ok(None)
            })
            .await?;
        if claimed.state == TicketState::Expired {
            return Err(CoreError::Gone("the ticket expired".into()));
        }
        let client = ClientInfo {
            ip: ticket.ip.clone(),
            user_agent: ticket.user_agent.clone(),
            language: crate::auth::Language::default(),
        };
        let confirmed = unimsg_proto::hooks::QrConfirmedData {
            ticket_id: ticket.ticket_id.to_string(),
            user_id: user.clone(),
        };
        let opening = crate::auth::Opening {
            platform: ticket.platform.clone(),
            device_id: ticket.device_id.clone(),
            client,
            access_ttl: None,
            also: self.hook_draft(
                unimsg_proto::hooks::HookEventType::QrConfirmed,
                &confirmed,
                None,
            ),
        };
        let pair = self.open_session_for(&user, opening).await?;
        crate::auth::login_succeeded("qr");
        let session = pair.session_id.clone();
        self.audit(crate::audit::AuditRecord {
            action: "auth.qr_confirmed".into(),
            actor_kind: if approver_session.is_some() {
                "user".into()
            } else {
                "admin".into()
            },
            actor: approver.to_owned(),
            ip: ticket.ip.clone(),
            outcome: "ok".into(),
            target: Some(user.to_string()),
            session_id: Some(session.to_string()),
            detail: Some(format!(
                "ticket {}; approved from session {}",
                ticket.ticket_id,
                approver_session.map_or("-".to_owned(), |s| s.to_string())
            )),
            ..Default::default()
        })
        .await;
        self.qr
            .update(&ticket.ticket_id, &mut |_| {
                Ok(Some(QrEvent::Confirmed(Box::new(pair.clone()))))
            })
            .await?;
        Ok(session)
    }

    /// `POST /v1/auth/qr/{ticket_id}/cancel` by the phone that scanned it.
    pub async fn cancel_qr(&self, auth: &AuthContext, ticket_id: &str) -> Result<()> {
        self.scanned_by(ticket_id, auth).await?;
        self.qr
            .update(ticket_id, &mut |t| {
                if !t.state.is_open() {
                    return Err(closed(&t.state));
                }
                t.state = TicketState::Cancelled;
                Ok(Some(QrEvent::Cancelled))
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_and_unambiguous() {
        for _ in 0..100 {
            let code = new_code().unwrap_or_default();
            assert_eq!(code.len(), CODE_LEN);
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)));
            assert!(!code.contains(['0', 'O', '1', 'I', 'L']));
        }
        assert_eq!(normalize_code(" abcd-ef 23 "), "ABCDEF23");
    }
}
