//! The backend matrix: every test runs on the embedded backend and on PostgreSQL + Redis.
//!
//! Postgres and Redis come from `FWB_TEST_DATABASE_URL` / `FWB_TEST_REDIS_URL` when set, otherwise from
//! testcontainers when a Docker daemon answers; otherwise the Postgres+Redis variant of each test prints one
//! line saying it was skipped and why — unless `FWB_REQUIRE_SERVICES=1`, which makes that a failure.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use testcontainers::ContainerAsync;
use testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::{postgres::Postgres, redis::Redis};

#[derive(Clone)]
pub(crate) enum Backend {
    Embedded,
    PostgresRedis(Arc<Services>),
}

/// Where the Postgres and Redis servers of a test are.
pub(crate) struct Services {
    /// A database on the server that test databases are created from.
    admin_url: String,
    pub(crate) redis_url: String,
    _containers: Option<(ContainerAsync<Postgres>, ContainerAsync<Redis>)>,
}

impl Services {
    /// The servers for one test, or why there are none.
    pub(crate) async fn acquire() -> Result<Arc<Services>, String> {
        let db = std::env::var("FWB_TEST_DATABASE_URL").ok().filter(|s| !s.is_empty());
        let redis = std::env::var("FWB_TEST_REDIS_URL").ok().filter(|s| !s.is_empty());
        if let (Some(admin_url), Some(redis_url)) = (db, redis) {
            return Ok(Arc::new(Services { admin_url, redis_url, _containers: None }));
        }
        // Containers are per test: slower, but nothing outlives the test that started it.
        let pg = Postgres::default()
            .start()
            .await
            .map_err(|e| format!("FWB_TEST_DATABASE_URL/FWB_TEST_REDIS_URL unset and no Docker daemon ({e})"))?;
        let redis = Redis::default().start().await.map_err(|e| format!("cannot start a Redis container: {e}"))?;
        let pg_port = pg.get_host_port_ipv4(5432).await.map_err(|e| e.to_string())?;
        let redis_port = redis.get_host_port_ipv4(6379).await.map_err(|e| e.to_string())?;
        Ok(Arc::new(Services {
            admin_url: format!("postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres"),
            redis_url: format!("redis://127.0.0.1:{redis_port}"),
            _containers: Some((pg, redis)),
        }))
    }

    /// A fresh, empty database; dropped when the guard is.
    pub(crate) async fn create_database(&self) -> TestDatabase {
        let name = format!("fwb_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&self.admin_url).await.expect("the test Postgres answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        TestDatabase { url: with_database(&self.admin_url, &name), admin_url: self.admin_url.clone(), name }
    }

    /// The host and port of the Postgres server, for tests that put something in between.
    pub(crate) fn postgres_addr(&self) -> (String, u16) {
        let options = PgConnectOptions::from_str(&self.admin_url).expect("a valid URL");
        (options.get_host().to_owned(), options.get_port())
    }
}

/// `url` with its database name replaced.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

pub(crate) struct TestDatabase {
    pub(crate) url: String,
    admin_url: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await, and the test's runtime may be shutting down: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The Postgres+Redis backend for one test, or `None` after printing why it is skipped.
/// Panics instead of skipping when `FWB_REQUIRE_SERVICES=1`.
pub(crate) async fn postgres_redis_or_skip(test: &str) -> Option<Backend> {
    match Services::acquire().await {
        Ok(services) => Some(Backend::PostgresRedis(services)),
        Err(why) if std::env::var("FWB_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("{test}: Postgres/Redis required (FWB_REQUIRE_SERVICES=1) but unavailable: {why}")
        }
        Err(why) => {
            skip_notice(&format!("skipped {test} on postgres+redis: {why}"));
            None
        }
    }
}

/// One line on the terminal even when the test harness captures output: `eprintln!` would be captured and
/// hidden for a passing test, a direct write to stderr is not.
pub(crate) fn skip_notice(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Turns `async fn name(backend: Backend)` test bodies into two tests each: `name::embedded` and
/// `name::postgres_redis`.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn embedded() {
                super::$name(crate::backends::Backend::Embedded).await;
            }

            #[tokio::test]
            async fn postgres_redis() {
                let test = concat!(module_path!(), "::postgres_redis");
                if let Some(backend) = crate::backends::postgres_redis_or_skip(test).await {
                    super::$name(backend).await;
                }
            }
        }
    )+};
}
pub(crate) use on_both_backends;

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
