//! QR login tickets ([`QrTickets`]): lookups, device binding, atomic
//! updates announced to listeners, refused changes, and racing claims.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;
use unimsg_proto::{Platform, UserId};

use super::{Backend, unique};
use crate::error::{CoreError, Result};
use crate::qr::{QrEvent, QrTickets, Ticket, TicketState};

/// How long an announced event may take to reach a listener.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pending ticket with a unique id, code and device, open for five
/// minutes from `now`.
pub fn pending_ticket(now: OffsetDateTime) -> Ticket {
    let tag = unique();
    Ticket {
        code: tag[..8].to_uppercase(),
        page_hash: crate::qr::page_hash(&format!("secret-{tag}")),
        ticket_id: tag.clone(),
        platform: Platform::parse("web").expect("`web` is a platform"),
        device_id: Some(format!("device-{tag}")),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("suite".into()),
        created_at: now,
        expires_at: now + time::Duration::minutes(5),
        state: TicketState::Pending,
    }
}

/// The next event on `rx`; fails if none comes within a few seconds.
pub async fn next_event(rx: &mut broadcast::Receiver<QrEvent>, what: &str) -> QrEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no event within {EVENT_TIMEOUT:?}"),
    }
}

/// The name a `Scanned` event carries (the suite marks events with it).
fn marker(event: &QrEvent) -> &str {
    match event {
        QrEvent::Scanned { display_name } => display_name,
        other => panic!("expected a Scanned event, got {other:?}"),
    }
}

fn scanned(name: &str) -> QrEvent {
    QrEvent::Scanned {
        display_name: name.to_owned(),
    }
}

async fn get(store: &dyn QrTickets, id: &str) -> Ticket {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
        .unwrap_or_else(|| panic!("ticket {id} not found"))
}

async fn subscribe(store: &dyn QrTickets, id: &str) -> broadcast::Receiver<QrEvent> {
    store
        .subscribe(id)
        .await
        .unwrap_or_else(|e| panic!("subscribe {id}: {e}"))
        .unwrap_or_else(|| panic!("ticket {id} not found to subscribe"))
}

fn same(found: &Ticket, expected: &Ticket, what: &str) {
    assert_eq!(found.ticket_id, expected.ticket_id, "{what}: id");
    assert_eq!(found.code, expected.code, "{what}: code");
    assert_eq!(found.page_hash, expected.page_hash, "{what}: page hash");
    assert_eq!(found.platform, expected.platform, "{what}: platform");
    assert_eq!(found.device_id, expected.device_id, "{what}: device");
    assert_eq!(found.ip, expected.ip, "{what}: ip");
    assert_eq!(found.user_agent, expected.user_agent, "{what}: user agent");
    assert_eq!(found.created_at, expected.created_at, "{what}: created_at");
    assert_eq!(found.expires_at, expected.expires_at, "{what}: expires_at");
    assert_eq!(found.state, expected.state, "{what}: state");
}

/// Lookups by id, by code and by the page's secret, only while open and
/// unexpired; unknown tickets can be neither updated nor listened to.
pub async fn tickets_are_found_by_id_code_and_page(backend: &dyn Backend) {
    let store = &*backend.tickets();
    let now = OffsetDateTime::now_utc();
    let ticket = pending_ticket(now);
    let id = ticket.ticket_id.clone();
    let page = ticket.page_hash.clone();
    store.insert(ticket.clone()).await.expect("insert");

    same(&get(store, &id).await, &ticket, "by id");
    let by_code = store
        .by_code(&ticket.code)
        .await
        .expect("by_code")
        .expect("not found by code");
    same(&by_code, &ticket, "by code");
    let missing = format!("missing-{}", unique());
    assert!(store.get(&missing).await.expect("get").is_none());
    assert!(store.by_code(&missing).await.expect("by_code").is_none());

    // The page's own ticket, by its secret's hash: only while open and unexpired.
    let open = |at: OffsetDateTime| {
        let page = page.clone();
        async move { store.open_for_page(&page, at).await.expect("open_for_page") }
    };
    let found = open(now).await.expect("the page's open ticket");
    same(&found, &ticket, "by page");
    assert!(
        open(ticket.expires_at - time::Duration::seconds(1))
            .await
            .is_some()
    );
    assert!(
        open(ticket.expires_at).await.is_none(),
        "not once expired (at `now`)"
    );
    assert!(
        open(ticket.expires_at + time::Duration::minutes(1))
            .await
            .is_none()
    );
    assert!(
        store
            .open_for_page(&crate::qr::page_hash(&missing), now)
            .await
            .expect("open_for_page")
            .is_none(),
        "an unknown secret has none"
    );
    // Another ticket of the same device is not this page's.
    let mut same_device = pending_ticket(now);
    same_device.device_id = ticket.device_id.clone();
    store.insert(same_device.clone()).await.expect("insert");
    let found = open(now)
        .await
        .expect("the page's ticket after another of its device");
    same(
        &found,
        &ticket,
        "by page, beside another ticket of the device",
    );

    // Closed: no longer the device's open ticket, though still readable.
    store
        .update(&id, &mut |t| {
            t.state = TicketState::Cancelled;
            Ok(None)
        })
        .await
        .expect("cancel");
    assert!(open(now).await.is_none(), "a closed ticket is not open");
    assert_eq!(get(store, &id).await.state, TicketState::Cancelled);

    // Unknown tickets cannot be updated or listened to.
    let result = store.update(&missing, &mut |_| Ok(None)).await;
    assert!(
        matches!(result, Err(CoreError::NotFound(_))),
        "update of an unknown ticket: {result:?}"
    );
    assert!(
        store
            .subscribe(&missing)
            .await
            .expect("subscribe")
            .is_none(),
        "subscribing to an unknown ticket"
    );
}

/// Updates are stored whole and announced to every listener; a refused
/// or quiet change announces nothing.
pub async fn updates_are_stored_whole_and_announced(backend: &dyn Backend) {
    let store = &*backend.tickets();
    let now = OffsetDateTime::now_utc();
    let ticket = pending_ticket(now);
    let id = ticket.ticket_id.clone();
    store.insert(ticket.clone()).await.expect("insert");
    let mut rx = subscribe(store, &id).await;
    let mut second = subscribe(store, &id).await;

    // A change is stored whole, returned, and its event announced to every
    // listener.
    let by = UserId::parse(format!("u{}", unique())).expect("a user id");
    let updated = store
        .update(&id, &mut |t| {
            assert_eq!(t.state, TicketState::Pending, "the change sees the state");
            t.state = TicketState::Scanned {
                by: by.clone(),
                display_name: "Scanner".into(),
            };
            t.user_agent = Some("changed".into());
            Ok(Some(scanned("first")))
        })
        .await
        .expect("update");
    let mut expected = ticket.clone();
    expected.state = TicketState::Scanned {
        by: by.clone(),
        display_name: "Scanner".into(),
    };
    expected.user_agent = Some("changed".into());
    same(&updated, &expected, "the update's answer");
    same(&get(store, &id).await, &expected, "after the update");
    assert_eq!(
        marker(&next_event(&mut rx, "the update's event").await),
        "first"
    );
    assert_eq!(
        marker(&next_event(&mut second, "the second listener").await),
        "first"
    );

    // A change that fails changes nothing and announces nothing.
    let result = store
        .update(&id, &mut |t| {
            t.state = TicketState::Confirmed;
            t.ip = None;
            Err(CoreError::Conflict("refused by the suite".into()))
        })
        .await;
    assert!(
        matches!(result, Err(CoreError::Conflict(_))),
        "the change's error is returned: {result:?}"
    );
    same(&get(store, &id).await, &expected, "after a refused change");

    // A change without an event is stored, and announces nothing.
    let quiet = store
        .update(&id, &mut |t| {
            t.user_agent = Some("quiet".into());
            Ok(None)
        })
        .await
        .expect("update");
    expected.user_agent = Some("quiet".into());
    same(&quiet, &expected, "a change without an event");
    same(&get(store, &id).await, &expected, "after a quiet change");

    // The next event heard is the next one announced: nothing came from the
    // refused or the quiet change.
    store
        .update(&id, &mut |_| Ok(Some(scanned("second"))))
        .await
        .expect("update");
    assert_eq!(
        marker(&next_event(&mut rx, "the event after").await),
        "second",
        "no event from a refused or quiet change"
    );
    assert_eq!(
        marker(&next_event(&mut second, "the event after").await),
        "second"
    );

    // A listener that joins later hears what follows.
    let mut late = subscribe(store, &id).await;
    store
        .update(&id, &mut |t| {
            t.state = TicketState::Expired;
            Ok(Some(QrEvent::Expired))
        })
        .await
        .expect("update");
    for (rx, who) in [
        (&mut rx, "first"),
        (&mut second, "second"),
        (&mut late, "late"),
    ] {
        let event = next_event(rx, who).await;
        assert!(
            matches!(event, QrEvent::Expired),
            "{who} listener: {event:?}"
        );
    }
    assert_eq!(get(store, &id).await.state, TicketState::Expired);
}

/// Of two claims at once exactly one wins, and only it is announced.
pub async fn of_two_racing_claims_exactly_one_wins(backend: &dyn Backend) {
    let store = &*backend.tickets();
    let now = OffsetDateTime::now_utc();
    let ticket = pending_ticket(now);
    let id = ticket.ticket_id.clone();
    store.insert(ticket).await.expect("insert");
    let mut rx = subscribe(store, &id).await;

    // Two claims at once: each confirms the ticket only if it is still
    // open; exactly one may win.
    let calls = AtomicUsize::new(0);
    let claim = |name: &'static str| {
        let calls = &calls;
        move |t: &mut Ticket| -> Result<Option<QrEvent>> {
            calls.fetch_add(1, Ordering::Relaxed);
            if !t.state.is_open() {
                return Err(CoreError::Conflict("already claimed".into()));
            }
            t.state = TicketState::Confirmed;
            Ok(Some(scanned(name)))
        }
    };
    let (mut a, mut b) = (claim("a"), claim("b"));
    let (ra, rb) = tokio::join!(store.update(&id, &mut a), store.update(&id, &mut b));
    let winner = match (&ra, &rb) {
        (Ok(t), Err(CoreError::Conflict(_))) | (Err(CoreError::Conflict(_)), Ok(t)) => {
            assert_eq!(t.state, TicketState::Confirmed);
            if ra.is_ok() { "a" } else { "b" }
        }
        _ => panic!("exactly one claim must win, the other see a conflict: {ra:?}, {rb:?}"),
    };
    assert!(calls.load(Ordering::Relaxed) >= 2);
    assert_eq!(get(store, &id).await.state, TicketState::Confirmed);

    // Only the winner announced: its event, then the next one announced.
    assert_eq!(
        marker(&next_event(&mut rx, "the winning claim").await),
        winner
    );
    store
        .update(&id, &mut |_| Ok(Some(scanned("after"))))
        .await
        .expect("update");
    assert_eq!(
        marker(&next_event(&mut rx, "after the race").await),
        "after",
        "the losing claim announced nothing"
    );
}
