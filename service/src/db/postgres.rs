//! The production metadata backend: PostgreSQL through a sqlx pool.
//!
//! The pool is created without connecting, so the service starts (and answers `/health/ready` with 503)
//! while the database is unreachable; a background task retries with backoff until it can run the migrations,
//! and only then does the store accept queries. Its statements are the shared ones ([`super::sql`]).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::sql::{push_name_like, sql_store};
use super::{DbError, PoolSettings};

pub(crate) struct PostgresStore {
    pool: PgPool,
    /// Set once the migrations have run; until then every call is `DbError::NotReady`.
    ready: Arc<AtomicBool>,
}

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

impl PostgresStore {
    /// Builds the pool (no connection yet) and starts migrating in the background, retrying with backoff.
    pub(crate) fn connect_lazy(url: &str, settings: &PoolSettings) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url)?.application_name("filewallball");
        let pool = PgPoolOptions::new()
            // The performance guide's pool of 20 plus 30 overflow is a ceiling of 50; connections above the base size
            // are closed after a while idle, which is what overflow connections do in the performance guide's pool.
            .max_connections(settings.size + settings.overflow)
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(60)))
            .acquire_timeout(settings.timeout)
            .max_lifetime(Some(settings.recycle))
            .test_before_acquire(settings.pre_ping)
            .connect_lazy_with(options);
        let ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(migrate_until_done(pool.clone(), ready.clone()));
        Ok(Self { pool, ready })
    }

    fn pool(&self) -> Result<&PgPool, DbError> {
        if self.ready.load(Ordering::Acquire) { Ok(&self.pool) } else { Err(DbError::NotReady) }
    }

    /// A substring of the name, served by the trigram index on `lower(name)`.
    fn push_name_contains(b: &mut QueryBuilder<Postgres>, needle: &str) {
        push_name_like(b, needle);
    }
}

async fn migrate_until_done(pool: PgPool, ready: Arc<AtomicBool>) {
    let mut delay = FIRST_RETRY;
    loop {
        match sqlx::migrate!("./migrations/postgres").run(&pool).await {
            Ok(()) => {
                ready.store(true, Ordering::Release);
                tracing::info!("postgres connected and migrated");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "postgres not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}

sql_store!(PostgresStore, Postgres);
