//! The metadata store: users and API keys, files with their tags and blob reference counts, share links, and
//! the audit log.
//!
//! Each is a trait of its own ([`UserStore`], [`FileStore`], [`ShareStore`], [`AuditStore`]), so a part of the
//! service asks for what it uses; [`MetaStore`] is all of them, which the application state holds. Both backends,
//! SQLite (embedded) and PostgreSQL, implement them from one set of statements in [`sql`].

pub(crate) mod postgres;
mod sql;
pub(crate) mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::audit::{AuditEntry, AuditEvent, AuditQuery, DayStats};
use crate::domain::{ApiKey, FileMeta, FilePatch, FileQuery, NewFile, Role, ShareLink, ThumbState, User};

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

/// Pool sizing, from the performance guide: a base size, an overflow on top, a wait limit, a recycle age and a pre-ping.
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

/// A blob row as reconciliation sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct BlobRecord {
    pub(crate) content_hash: String,
    pub(crate) size: i64,
    pub(crate) ref_count: i64,
    /// File rows whose content this is (what `ref_count` should be).
    pub(crate) files: i64,
}

/// Hashes asked about per statement, well under both backends' limits on bound parameters.
pub(crate) const HASHES_PER_QUERY: usize = 500;

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

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserPatch {
    pub(crate) role: Option<Role>,
    /// `Some(None)` removes the quota.
    pub(crate) quota_bytes: Option<Option<i64>>,
    /// `Some(true)` disables the user (their keys stop working), `Some(false)` enables them again.
    pub(crate) disabled: Option<bool>,
}

#[async_trait]
pub(crate) trait UserStore: Send + Sync + 'static {
    async fn create_user(&self, user: &NewUser) -> Result<User, DbError>;
    async fn get_user(&self, id: Uuid) -> Result<Option<User>, DbError>;
    async fn list_users(&self) -> Result<Vec<User>, DbError>;
    /// Changes a user's role, quota or disabled state; `None` when there is no such user.
    async fn update_user(&self, id: Uuid, patch: &UserPatch) -> Result<Option<User>, DbError>;
    async fn create_api_key(&self, user_id: Uuid, key_hash: &str, prefix: &str) -> Result<ApiKey, DbError>;
    async fn list_api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>, DbError>;
    /// Marks a key revoked; `false` when the user has no such live key.
    async fn revoke_api_key(&self, user_id: Uuid, key_id: Uuid) -> Result<bool, DbError>;
    /// The enabled user owning the live key with this hash.
    async fn authenticate(&self, key_hash: &str) -> Result<Option<(User, ApiKey)>, DbError>;
    async fn touch_api_key(&self, key_id: Uuid, at: DateTime<Utc>) -> Result<(), DbError>;
}

/// Files, their tags, and the reference counts of the blobs they point at.
#[async_trait]
pub(crate) trait FileStore: Send + Sync + 'static {
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
    /// Bytes counted against the user's quota: every file of theirs not purged, the trash included.
    async fn used_bytes(&self, user_id: Uuid) -> Result<i64, DbError>;
    /// Records the outcome of thumbnailing a file (and the image's size when known).
    async fn set_thumbnail(&self, id: Uuid, state: ThumbState, size: Option<(i32, i32)>) -> Result<(), DbError>;
    /// Live files whose thumbnails are still to be made, oldest first: (id, content hash).
    async fn pending_thumbnails(&self, limit: u32) -> Result<Vec<(Uuid, String)>, DbError>;
    /// How many files refer to a blob; `None` when it has no row.
    async fn blob_ref_count(&self, content_hash: &str) -> Result<Option<i64>, DbError>;
    /// Those of `hashes` that have a blob row (in any order).
    async fn known_blobs(&self, hashes: &[String]) -> Result<Vec<String>, DbError>;
    /// Up to `limit` blob rows after `after` in hash order, each with the files that actually refer to it.
    async fn blob_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<BlobRecord>, DbError>;
    /// Sets a blob's reference count to the files that refer to it, removing the row when none do;
    /// returns the new count.
    async fn recount_blob(&self, content_hash: &str) -> Result<i64, DbError>;
    /// A page of files, `limit + 1` rows at most so the caller knows whether another page follows.
    async fn list_files(&self, query: &FileQuery) -> Result<Vec<FileMeta>, DbError>;
}

#[async_trait]
pub(crate) trait ShareStore: Send + Sync + 'static {
    async fn create_share(&self, link: &ShareLink) -> Result<(), DbError>;
    async fn get_share(&self, id: Uuid) -> Result<Option<ShareLink>, DbError>;
    async fn list_shares(&self, file_id: Uuid) -> Result<Vec<ShareLink>, DbError>;
    /// Marks a link revoked; `false` when there is no such live link.
    async fn revoke_share(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DbError>;
    /// Counts one download if the link is live (not revoked, not expired, downloads left); `false` otherwise.
    async fn use_share(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, DbError>;
}

/// The audit log and the daily figures drawn from it.
#[async_trait]
pub(crate) trait AuditStore: Send + Sync + 'static {
    /// Deletes up to `limit` audit rows older than `before`; returns how many went.
    async fn prune_audit(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, DbError>;
    /// Writes a batch of audit events in one statement.
    async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), DbError>;
    /// A page of the audit log, newest first, `limit + 1` rows at most.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, DbError>;
    /// The figures of the UTC day starting at `from` (and ending at `to`).
    async fn day_stats(
        &self,
        date: chrono::NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<DayStats, DbError>;
}

/// The whole store, as the application state holds it.
#[async_trait]
pub(crate) trait MetaStore: UserStore + FileStore + ShareStore + AuditStore {
    /// A round trip to the database, for readiness.
    async fn ping(&self) -> Result<(), DbError>;
}
