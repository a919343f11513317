//! Transaction helpers shared by the trait implementations.

/// Runs `$body` inside a `READ COMMITTED` transaction on a pooled
/// connection and commits it, running it again from the start (at most
/// five times) after a deadlock or a serialization failure. `$body` is an
/// expression of type `Result<T>` that uses `$tx`
/// (`&deadpool_postgres::Transaction`); since it may run more than once it
/// must not move captured values (borrow or clone them).
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut client = $store.client().await?;
            let tx_handle = client.transaction().await.map_err($crate::pg)?;
            let outcome: ::unimsg_store::Result<_> = {
                let $tx = &tx_handle;
                async { $body }.await
            };
            let outcome = match outcome {
                Ok(value) => tx_handle
                    .commit()
                    .await
                    .map_err($crate::pg)
                    .map(|()| value),
                Err(e) => Err(e),
            };
            match outcome {
                Err(e) if $crate::retryable(&e) && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "transaction retried");
                }
                other => break other,
            }
        }
    }};
}

/// Runs `$body` in a read-only `REPEATABLE READ` transaction: every
/// statement sees the same snapshot.
macro_rules! snapshot {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let tx_handle = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err($crate::pg)?;
        let outcome: ::unimsg_store::Result<_> = {
            let $tx = &tx_handle;
            async { $body }.await
        };
        // Read-only: ending it either way is the same; commit is cheapest.
        if outcome.is_ok() {
            tx_handle.commit().await.map_err($crate::pg)?;
        }
        outcome
    }};
}
