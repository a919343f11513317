//! Transaction helpers shared by the trait implementations. Each runs its
//! body as a [`crate::DbResult`], so that `?` takes driver errors and store
//! errors alike, and hands the caller a [`unimsg_store::StoreError`].

/// Runs `$body` inside a `READ COMMITTED` transaction on a pooled
/// connection and commits it, running it again from the start (at most
/// five times) after a deadlock or a serialization failure. `$body` is an
/// expression of type `Result<T>` that uses `$tx`
/// (`&deadpool_postgres::Transaction`); since it may run more than once it
/// must not move captured values (borrow or clone them).
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let started = ::tokio::time::Instant::now();
        let mut attempt = 0u32;
        let outcome = loop {
            let mut client = $store.client().await?;
            let tx_handle = client.transaction().await.map_err($crate::pg)?;
            let outcome: $crate::DbResult<_> = {
                let $tx = &tx_handle;
                async { $body }.await
            };
            let outcome = match outcome {
                Ok(value) => tx_handle
                    .commit()
                    .await
                    .map_err($crate::Error::from)
                    .map(|()| value),
                Err(e) => Err(e),
            };
            match outcome {
                Err(e) if e.is_retryable() && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %::unimsg_store::StoreError::from(e), attempt, "transaction retried");
                }
                other => break other.map_err(::unimsg_store::StoreError::from),
            }
        };
        ::unimsg_store::timing::observe(::unimsg_store::timing::Call::Write, started.elapsed());
        outcome
    }};
}

/// Runs `$body` in a read-only `REPEATABLE READ` transaction: every
/// statement sees the same snapshot.
macro_rules! snapshot {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let started = ::tokio::time::Instant::now();
        let mut client = $store.client().await?;
        let tx_handle = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err($crate::pg)?;
        let outcome: $crate::DbResult<_> = {
            let $tx = &tx_handle;
            async { $body }.await
        };
        let outcome = outcome.map_err(::unimsg_store::StoreError::from);
        // Read-only: ending it either way is the same; commit is cheapest.
        if outcome.is_ok() {
            tx_handle.commit().await.map_err($crate::pg)?;
        }
        ::unimsg_store::timing::observe(::unimsg_store::timing::Call::Read, started.elapsed());
        outcome
    }};
}

/// Runs `$body` with a pooled connection `$client`, outside any explicit
/// transaction (one statement, or reads that need no common snapshot).
macro_rules! connected {
    ($store:expr, |$client:ident| $body:expr) => {{
        let started = ::tokio::time::Instant::now();
        let $client = $store.client().await?;
        let outcome: $crate::DbResult<_> = async { $body }.await;
        ::unimsg_store::timing::observe(::unimsg_store::timing::Call::Statement, started.elapsed());
        outcome.map_err(::unimsg_store::StoreError::from)
    }};
}
