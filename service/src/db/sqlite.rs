//! The embedded metadata backend: one SQLite file in WAL mode. Its statements are the shared ones
//! ([`super::sql`]); what is its own is the connection and the name search through its trigram FTS table.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::sql::{push_name_like, sql_store};
use super::{DbError, PoolSettings};

pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and runs the migrations.
    pub(crate) async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL with WAL loses at most the last transactions on power loss, never consistency.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // SQLite has one writer at a time; the base pool size is plenty of readers, overflow would only queue.
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.size)
            .acquire_timeout(settings.timeout)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    fn pool(&self) -> Result<&SqlitePool, DbError> {
        Ok(&self.pool)
    }

    /// The trigram index answers substrings of three characters or more; shorter ones scan.
    fn push_name_contains(b: &mut QueryBuilder<Sqlite>, needle: &str) {
        if needle.chars().count() >= 3 {
            let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
            b.push("f.rowid IN (SELECT rowid FROM file_info_name_fts WHERE file_info_name_fts MATCH ")
                .push_bind(phrase)
                .push(")");
        } else {
            push_name_like(b, needle);
        }
    }
}

sql_store!(SqliteStore, Sqlite);
