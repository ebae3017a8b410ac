//! The metadata store: users, API keys, files, tags and blob reference counts.
//!
//! [`MetaStore`] is the interface every backend implements (SQLite now, PostgreSQL next);
//! the rest of the service only ever holds an `Arc<dyn MetaStore>`.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ApiKey, FileMeta, FilePatch, FileQuery, NewFile, Role, User};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// A unique or foreign-key constraint refused the write; the string names the constraint.
    #[error("conflict on {0}")]
    Conflict(String),
    /// No connection could be had within the pool's timeout.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database has not been reached (and migrated) since startup yet.
    #[error("database not connected yet")]
    NotReady,
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => DbError::Unavailable(e),
            sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => {
                DbError::Conflict(db.constraint().unwrap_or("unique").to_owned())
            }
            _ => DbError::Other(e),
        }
    }
}

/// Pool sizing, from the seed: a base size, an overflow on top, a wait limit, a recycle age and a pre-ping.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub(crate) size: u32,
    pub(crate) overflow: u32,
    pub(crate) timeout: Duration,
    pub(crate) recycle: Duration,
    pub(crate) pre_ping: bool,
}

/// Opens the backend the URL names: `postgres://…` (connecting in the background) or `sqlite://…`.
pub(crate) async fn connect(url: &str, settings: &PoolSettings) -> Result<Arc<dyn MetaStore>, DbError> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PostgresStore::connect_lazy(url, settings)?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::connect(url, settings).await?))
    }
}

/// What purging a file did to its blob.
#[derive(Debug, Clone)]
pub(crate) struct Purged {
    pub(crate) content_hash: String,
    /// No file refers to the blob any more: its bytes may be removed.
    pub(crate) blob_released: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct NewUser {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) quota_bytes: Option<i64>,
}

#[async_trait]
pub(crate) trait MetaStore: Send + Sync + 'static {
    /// A round trip to the database, for readiness.
    async fn ping(&self) -> Result<(), DbError>;

    async fn create_user(&self, user: &NewUser) -> Result<User, DbError>;
    async fn get_user(&self, id: Uuid) -> Result<Option<User>, DbError>;
    async fn list_users(&self) -> Result<Vec<User>, DbError>;

    async fn create_api_key(&self, user_id: Uuid, key_hash: &str, prefix: &str) -> Result<ApiKey, DbError>;
    async fn list_api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>, DbError>;
    /// Marks a key revoked; `false` when the user has no such live key.
    async fn revoke_api_key(&self, user_id: Uuid, key_id: Uuid) -> Result<bool, DbError>;
    /// The enabled user owning the live key with this hash.
    async fn authenticate(&self, key_hash: &str) -> Result<Option<(User, ApiKey)>, DbError>;
    async fn touch_api_key(&self, key_id: Uuid, at: DateTime<Utc>) -> Result<(), DbError>;

    /// Inserts the file row and its tags and takes a reference on its blob, in one transaction.
    async fn insert_file(&self, file: &NewFile) -> Result<FileMeta, DbError>;
    /// A file by id, deleted or not.
    async fn get_file(&self, id: Uuid) -> Result<Option<FileMeta>, DbError>;
    async fn update_file(&self, id: Uuid, patch: &FilePatch, now: DateTime<Utc>) -> Result<Option<FileMeta>, DbError>;
    /// Sets or clears `deleted_at`.
    async fn set_deleted(
        &self,
        id: Uuid,
        deleted_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<FileMeta>, DbError>;
    /// Removes the row for good and drops its blob reference, in one transaction.
    async fn purge_file(&self, id: Uuid) -> Result<Option<Purged>, DbError>;
    /// How many files refer to a blob; `None` when it has no row.
    async fn blob_ref_count(&self, content_hash: &str) -> Result<Option<i64>, DbError>;
    /// A page of files, `limit + 1` rows at most so the caller knows whether another page follows.
    async fn list_files(&self, query: &FileQuery) -> Result<Vec<FileMeta>, DbError>;
}
