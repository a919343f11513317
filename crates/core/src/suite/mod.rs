//! The backend-independent test suite of the core's pluggable ephemeral
//! state: every [`NonceStore`], [`RateLimits`] and [`QrTickets`]
//! implementation must pass it. Compiled for the core's own tests and,
//! behind the `suite` feature, for backends' tests, which generate one
//! test per check with [`ephemeral_state_suite!`](crate::ephemeral_state_suite).
//!
//! Every check uses keys of its own (a random suffix), so the suite can run
//! several times against one shared server. Nothing waits for time to pass:
//! expiries are chosen in the past or the future instead, and waiting for
//! an event is bounded by a timeout that only turns a lost event into a
//! failure.

use std::sync::Arc;

use crate::limits::{LimitsConfig, RateLimits};
use crate::qr::QrTickets;
use crate::replay::{NonceBounds, NonceStore};

pub mod limits;
pub mod nonces;
pub mod tickets;

/// What a backend gives the suite: stores and limiters built on demand
/// with the bounds or configuration a check needs (small ones). On a
/// shared server they all share its data, which the checks' keys keep
/// apart.
pub trait Backend {
    fn nonces(&self, bounds: NonceBounds) -> Arc<dyn NonceStore>;
    fn limits(&self, config: LimitsConfig) -> Arc<dyn RateLimits>;
    fn tickets(&self) -> Arc<dyn QrTickets>;
}

/// A random suffix, so that runs against one shared server do not meet.
fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One `#[test]` per check of the suite, in modules `nonces`, `limits` and
/// `tickets` (named like the suite's), so that each failure is reported
/// on its own.
///
/// `ephemeral_state_suite!(#[tokio::test] backend);` where `backend` is an
/// `async fn` of the invoking module returning a
/// [`Backend`](crate::suite::Backend) (which may hold the server it runs
/// on: it lives until the test ends). The attribute is the test's, such as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`. Each
/// test runs its check twice on one backend: a check must use keys of its
/// own, as it does on a server that several runs share.
///
/// A new check is a `pub async fn(&dyn Backend)` in its module and a name
/// in the list below.
#[macro_export]
macro_rules! ephemeral_state_suite {
    (#[$test:meta] $backend:ident) => {
        $crate::ephemeral_state_suite!(@module nonces #[$test] $backend:
            a_nonce_is_refused_until_it_expires,
            bounds_refuse_new_nonces_and_evict_none,
        );
        $crate::ephemeral_state_suite!(@module limits #[$test] $backend:
            quotas_hold_per_key_and_per_limit,
            a_rate_of_zero_switches_a_limit_off,
            a_failing_pair_backs_off_until_a_success,
            past_the_account_ceiling_every_failing_pair_locks,
            admin_failures_back_off_their_address,
            sends_and_deliveries_are_counted_per_user,
        );
        $crate::ephemeral_state_suite!(@module tickets #[$test] $backend:
            tickets_are_found_by_id_code_and_page,
            updates_are_stored_whole_and_announced,
            of_two_racing_claims_exactly_one_wins,
        );
    };
    (@module $module:ident #[$test:meta] $backend:ident: $($check:ident),+ $(,)?) => {
        mod $module {
            $(
                #[$test]
                async fn $check() {
                    let backend = super::$backend().await;
                    $crate::suite::$module::$check(&backend).await;
                    $crate::suite::$module::$check(&backend).await;
                }
            )+
        }
    };
}

#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use super::Backend;
    use crate::limits::{LimitsConfig, MemoryLimits, RateLimits};
    use crate::qr::{MemoryTickets, QrTickets};
    use crate::replay::{MemoryNonces, NonceBounds, NonceStore};

    /// The in-process implementations; one ticket store for both runs of
    /// a check, as a server would be.
    struct Memory {
        tickets: Arc<MemoryTickets>,
    }

    impl Backend for Memory {
        fn nonces(&self, bounds: NonceBounds) -> Arc<dyn NonceStore> {
            Arc::new(MemoryNonces::new(bounds))
        }

        fn limits(&self, config: LimitsConfig) -> Arc<dyn RateLimits> {
            Arc::new(MemoryLimits::new(config))
        }

        fn tickets(&self) -> Arc<dyn QrTickets> {
            self.tickets.clone()
        }
    }

    async fn memory() -> Memory {
        Memory {
            tickets: Arc::new(MemoryTickets::default()),
        }
    }

    crate::ephemeral_state_suite!(
        #[tokio::test]
        memory
    );
}
