//! The writer thread's memo of the heads it reads before every append: the
//! newest broadcast (`bseq`) and each user's newest inbox row with the
//! user's broadcast base (`bbase`).
//!
//! Reading them is two of a direct send's eight statements per inbox (and
//! one per member of a group message). Only the writer thread writes, so
//! what it wrote last is what it would read, as long as it keeps the memo
//! true. The rules, kept by [`crate::run_batch`]:
//! - an append records the seq it wrote ([`record_inbox`]);
//! - the memo is forgotten whenever writes are undone (a `ROLLBACK`, a
//!   `ROLLBACK TO` a job's savepoint, a failed `COMMIT`) and after every
//!   job that is not one of the hot paths' repeatable ones, since those
//!   (new users, deletions, broadcasts, …) may change a head in ways the
//!   memo does not follow.
//!
//! Only the writer thread has a memo ([`install`]); on every other thread
//! (the readers) each call reads the store.

use std::cell::RefCell;
use std::collections::HashMap;

use unimsg_proto::UserId;

/// Users remembered at most; past that the memo starts again empty, so it
/// stays a few MiB however many users the server has.
const MAX_USERS: usize = 65_536;

#[derive(Default)]
struct Heads {
    broadcast: Option<i64>,
    /// Per user: the newest inbox seq and `bbase`.
    inbox: HashMap<UserId, (i64, i64)>,
}

thread_local! {
    static MEMO: RefCell<Option<Heads>> = const { RefCell::new(None) };
}

/// Gives the calling thread (the writer) a memo.
pub(crate) fn install() {
    MEMO.with(|m| *m.borrow_mut() = Some(Heads::default()));
}

/// Forgets every head: the next reads go to the store.
pub(crate) fn forget() {
    MEMO.with(|m| {
        if let Some(heads) = m.borrow_mut().as_mut() {
            heads.broadcast = None;
            heads.inbox.clear();
        }
    });
}

/// The broadcast head, from the memo or else from `read` (and then kept).
pub(crate) fn broadcast_head<E>(read: impl FnOnce() -> Result<i64, E>) -> Result<i64, E> {
    if let Some(head) = MEMO.with(|m| m.borrow().as_ref().and_then(|h| h.broadcast)) {
        return Ok(head);
    }
    let head = read()?;
    MEMO.with(|m| {
        if let Some(heads) = m.borrow_mut().as_mut() {
            heads.broadcast = Some(head);
        }
    });
    Ok(head)
}

/// A user's newest inbox seq and `bbase`, from the memo or else from
/// `read` (not kept: [`record_inbox`] keeps what the append then wrote).
pub(crate) fn inbox_head<E>(
    user: &UserId,
    read: impl FnOnce() -> Result<(i64, i64), E>,
) -> Result<(i64, i64), E> {
    match MEMO.with(|m| m.borrow().as_ref().and_then(|h| h.inbox.get(user).copied())) {
        Some(head) => Ok(head),
        None => read(),
    }
}

/// The writer appended `seq` to `user`'s inbox (whose `bbase` is `base`).
pub(crate) fn record_inbox(user: &UserId, seq: i64, base: i64) {
    MEMO.with(|m| {
        if let Some(heads) = m.borrow_mut().as_mut() {
            if heads.inbox.len() >= MAX_USERS && !heads.inbox.contains_key(user) {
                heads.inbox.clear();
            }
            heads.inbox.insert(user.clone(), (seq, base));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_installed_memo_remembers_and_forget_empties_it() {
        let user = UserId::parse("u").unwrap();
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok::<_, ()>(7)
        };
        // Not installed (a reader thread): every call reads.
        assert_eq!(broadcast_head(read), Ok(7));
        assert_eq!(broadcast_head(read), Ok(7));
        record_inbox(&user, 3, 0);
        assert_eq!(inbox_head(&user, || Ok::<_, ()>((1, 0))), Ok((1, 0)));
        assert_eq!(reads.get(), 2);
        install();
        assert_eq!(broadcast_head(read), Ok(7));
        assert_eq!(broadcast_head(read), Ok(7));
        assert_eq!(reads.get(), 3, "the second call is answered by the memo");
        record_inbox(&user, 3, 1);
        assert_eq!(inbox_head(&user, || Ok::<_, ()>((1, 0))), Ok((3, 1)));
        forget();
        assert_eq!(inbox_head(&user, || Ok::<_, ()>((1, 0))), Ok((1, 0)));
        assert_eq!(broadcast_head(read), Ok(7));
        assert_eq!(reads.get(), 4);
    }
}
