//! The embedded metadata backend: one SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, FromRow, QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{
    BlobRecord, DbError, HASHES_PER_QUERY, MetaStore, NewUser, PoolSettings, Purged, UserPatch, contains_pattern,
    day_totals_sql, push_audit_query, push_list_query,
};
use crate::domain::audit::{AuditEntry, AuditEvent, AuditQuery, DayStats, TypeCount};
use crate::domain::{ApiKey, FileMeta, FilePatch, FileQuery, NewFile, Role, ShareLink, ThumbState, User, Visibility};

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
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> Result<DateTime<Utc>, DbError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| DbError::Corrupt(format!("timestamp {us} out of range")))
}

fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, DbError> {
    us.map(time).transpose()
}

#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    name: String,
    role: String,
    quota_bytes: Option<i64>,
    created_at: i64,
    disabled_at: Option<i64>,
}

impl TryFrom<UserRow> for User {
    type Error = DbError;
    fn try_from(r: UserRow) -> Result<Self, DbError> {
        Ok(User {
            id: r.id,
            name: r.name,
            role: Role::parse(&r.role).ok_or_else(|| DbError::Corrupt(format!("role {:?}", r.role)))?,
            quota_bytes: r.quota_bytes,
            created_at: time(r.created_at)?,
            disabled_at: opt_time(r.disabled_at)?,
        })
    }
}

#[derive(FromRow)]
struct KeyRow {
    id: Uuid,
    user_id: Uuid,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = DbError;
    fn try_from(r: KeyRow) -> Result<Self, DbError> {
        Ok(ApiKey {
            id: r.id,
            user_id: r.user_id,
            prefix: r.prefix,
            created_at: time(r.created_at)?,
            last_used_at: opt_time(r.last_used_at)?,
            revoked_at: opt_time(r.revoked_at)?,
        })
    }
}

fn thumb_state(s: Option<String>) -> Result<Option<ThumbState>, DbError> {
    s.map(|s| ThumbState::parse(&s).ok_or_else(|| DbError::Corrupt(format!("thumb_state {s:?}")))).transpose()
}

#[derive(FromRow)]
struct FileRow {
    id: Uuid,
    user_id: Uuid,
    name: String,
    mime_type: String,
    file_size: i64,
    content_hash: String,
    visibility: String,
    upload_time: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
    width: Option<i32>,
    height: Option<i32>,
    thumb_state: Option<String>,
    /// Tags joined by a newline (tags never contain control characters).
    tags: Option<String>,
}

impl TryFrom<FileRow> for FileMeta {
    type Error = DbError;
    fn try_from(r: FileRow) -> Result<Self, DbError> {
        Ok(FileMeta {
            id: r.id,
            owner_id: r.user_id,
            name: r.name,
            mime_type: r.mime_type,
            size: r.file_size,
            content_hash: r.content_hash,
            visibility: Visibility::parse(&r.visibility)
                .ok_or_else(|| DbError::Corrupt(format!("visibility {:?}", r.visibility)))?,
            tags: split_tags(r.tags),
            upload_time: time(r.upload_time)?,
            updated_at: time(r.updated_at)?,
            deleted_at: opt_time(r.deleted_at)?,
            width: r.width,
            height: r.height,
            thumbnail: thumb_state(r.thumb_state)?,
        })
    }
}

fn split_tags(joined: Option<String>) -> Vec<String> {
    let mut tags: Vec<String> = joined.iter().flat_map(|s| s.split('\n')).map(str::to_owned).collect();
    tags.sort();
    tags
}

// Statements below are assembled from these constant column lists only (hence `AssertSqlSafe`);
// every value travels as a bound parameter.
const USER_COLUMNS: &str = "id, name, role, quota_bytes, created_at, disabled_at";
const KEY_COLUMNS: &str = "id, user_id, prefix, created_at, last_used_at, revoked_at";
/// File columns with the tags folded in, for `FROM file_info f`.
const FILE_COLUMNS: &str = "f.id, f.user_id, f.name, f.mime_type, f.file_size, f.content_hash, f.visibility, \
     f.upload_time, f.updated_at, f.deleted_at, f.width, f.height, f.thumb_state, \
     (SELECT group_concat(tag, char(10)) FROM file_tags t WHERE t.file_id = f.id) AS tags";

impl SqliteStore {
    async fn fetch_file(&self, exec: impl sqlx::SqliteExecutor<'_>, id: Uuid) -> Result<Option<FileMeta>, DbError> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM file_info f WHERE f.id = ?");
        let row: Option<FileRow> = sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(exec).await?;
        row.map(FileMeta::try_from).transpose()
    }
}

async fn replace_tags(tx: &mut sqlx::SqliteConnection, file_id: Uuid, tags: &[String]) -> Result<(), DbError> {
    sqlx::query("DELETE FROM file_tags WHERE file_id = ?").bind(file_id).execute(&mut *tx).await?;
    for tag in tags {
        sqlx::query("INSERT INTO file_tags (file_id, tag) VALUES (?, ?)")
            .bind(file_id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[derive(FromRow)]
struct AuditRow {
    id: i64,
    timestamp: i64,
    user_id: Option<Uuid>,
    action: String,
    file_id: Option<Uuid>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    status: i32,
    bytes: Option<i64>,
    detail: Option<String>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = DbError;
    fn try_from(r: AuditRow) -> Result<Self, DbError> {
        Ok(AuditEntry {
            id: r.id,
            event: AuditEvent {
                timestamp: time(r.timestamp)?,
                user_id: r.user_id,
                action: r.action,
                file_id: r.file_id,
                ip_address: r.ip_address,
                user_agent: r.user_agent,
                status: u16::try_from(r.status).map_err(|_| DbError::Corrupt(format!("status {}", r.status)))?,
                bytes: r.bytes,
                detail: r.detail,
            },
        })
    }
}

#[derive(FromRow)]
struct ShareRow {
    id: Uuid,
    file_id: Uuid,
    created_by: Uuid,
    created_at: i64,
    expires_at: i64,
    max_downloads: Option<i64>,
    downloads: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ShareRow> for ShareLink {
    type Error = DbError;
    fn try_from(r: ShareRow) -> Result<Self, DbError> {
        Ok(ShareLink {
            id: r.id,
            file_id: r.file_id,
            created_by: r.created_by,
            created_at: time(r.created_at)?,
            expires_at: time(r.expires_at)?,
            max_downloads: r.max_downloads,
            downloads: r.downloads,
            revoked_at: opt_time(r.revoked_at)?,
        })
    }
}

const SHARE_COLUMNS: &str = "id, file_id, created_by, created_at, expires_at, max_downloads, downloads, revoked_at";

#[async_trait]
impl MetaStore for SqliteStore {
    async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<User, DbError> {
        let sql = format!(
            "INSERT INTO users (id, name, role, quota_bytes, created_at) VALUES (?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}"
        );
        let row: UserRow = sqlx::query_as(AssertSqlSafe(sql))
            .bind(Uuid::now_v7())
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind(user.quota_bytes)
            .bind(micros(Utc::now()))
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?");
        let row: Option<UserRow> = sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.map(User::try_from).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        let rows: Vec<UserRow> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.into_iter().map(User::try_from).collect()
    }

    async fn update_user(&self, id: Uuid, patch: &UserPatch) -> Result<Option<User>, DbError> {
        let sql = format!(
            "UPDATE users SET role = COALESCE(?, role), \
             quota_bytes = CASE WHEN ? THEN ? ELSE quota_bytes END, \
             disabled_at = CASE WHEN ? IS NULL THEN disabled_at WHEN ? THEN COALESCE(disabled_at, ?) ELSE NULL END \
             WHERE id = ? RETURNING {USER_COLUMNS}"
        );
        let row: Option<UserRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(patch.role.map(Role::as_str))
            .bind(patch.quota_bytes.is_some())
            .bind(patch.quota_bytes.flatten())
            .bind(patch.disabled)
            .bind(patch.disabled)
            .bind(micros(Utc::now()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(User::try_from).transpose()
    }

    async fn create_api_key(&self, user_id: Uuid, key_hash: &str, prefix: &str) -> Result<ApiKey, DbError> {
        let sql = format!(
            "INSERT INTO api_keys (id, user_id, key_hash, prefix, created_at) VALUES (?, ?, ?, ?, ?) RETURNING {KEY_COLUMNS}"
        );
        let row: KeyRow = sqlx::query_as(AssertSqlSafe(sql))
            .bind(Uuid::now_v7())
            .bind(user_id)
            .bind(key_hash)
            .bind(prefix)
            .bind(micros(Utc::now()))
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }

    async fn list_api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>, DbError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY id");
        let rows: Vec<KeyRow> = sqlx::query_as(AssertSqlSafe(sql)).bind(user_id).fetch_all(&self.pool).await?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn revoke_api_key(&self, user_id: Uuid, key_id: Uuid) -> Result<bool, DbError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL")
                .bind(micros(Utc::now()))
                .bind(key_id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn authenticate(&self, key_hash: &str) -> Result<Option<(User, ApiKey)>, DbError> {
        let sql = format!(
            "SELECT k.id AS key_id, k.prefix, k.created_at AS key_created_at, k.last_used_at, \
             u.{} FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL AND u.disabled_at IS NULL",
            USER_COLUMNS.replace(", ", ", u.")
        );
        #[derive(FromRow)]
        struct AuthRow {
            key_id: Uuid,
            prefix: String,
            key_created_at: i64,
            last_used_at: Option<i64>,
            #[sqlx(flatten)]
            user: UserRow,
        }
        let row: Option<AuthRow> = sqlx::query_as(AssertSqlSafe(sql)).bind(key_hash).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let user = User::try_from(row.user)?;
        let key = ApiKey {
            id: row.key_id,
            user_id: user.id,
            prefix: row.prefix,
            created_at: time(row.key_created_at)?,
            last_used_at: opt_time(row.last_used_at)?,
            revoked_at: None,
        };
        Ok(Some((user, key)))
    }

    async fn touch_api_key(&self, key_id: Uuid, at: DateTime<Utc>) -> Result<(), DbError> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(micros(at))
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_file(&self, file: &NewFile) -> Result<FileMeta, DbError> {
        let mut tx = self.pool.begin().await?;
        let now = micros(file.now);
        sqlx::query(
            "INSERT INTO blobs (content_hash, size, ref_count, created_at) VALUES (?, ?, 1, ?) \
             ON CONFLICT (content_hash) DO UPDATE SET ref_count = ref_count + 1",
        )
        .bind(&file.content_hash)
        .bind(file.size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO file_info (id, user_id, name, mime_type, file_size, content_hash, visibility, upload_time, \
             updated_at, thumb_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(file.id)
        .bind(file.owner_id)
        .bind(&file.name)
        .bind(&file.mime_type)
        .bind(file.size)
        .bind(&file.content_hash)
        .bind(file.visibility.as_str())
        .bind(now)
        .bind(now)
        .bind(file.thumbnail.map(ThumbState::as_str))
        .execute(&mut *tx)
        .await?;
        replace_tags(&mut tx, file.id, &file.tags).await?;
        let meta = self.fetch_file(&mut *tx, file.id).await?;
        tx.commit().await?;
        meta.ok_or_else(|| DbError::Corrupt("inserted file vanished".into()))
    }

    async fn get_file(&self, id: Uuid) -> Result<Option<FileMeta>, DbError> {
        self.fetch_file(&self.pool, id).await
    }

    async fn update_file(&self, id: Uuid, patch: &FilePatch, now: DateTime<Utc>) -> Result<Option<FileMeta>, DbError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE file_info SET name = COALESCE(?, name), visibility = COALESCE(?, visibility), updated_at = ? \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(patch.name.as_deref())
        .bind(patch.visibility.map(Visibility::as_str))
        .bind(micros(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(tags) = &patch.tags {
            replace_tags(&mut tx, id, tags).await?;
        }
        let meta = self.fetch_file(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn set_deleted(
        &self,
        id: Uuid,
        deleted_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<FileMeta>, DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE file_info SET deleted_at = ?, updated_at = ? WHERE id = ?")
            .bind(deleted_at.map(micros))
            .bind(micros(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let meta = self.fetch_file(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn purge_file(&self, id: Uuid) -> Result<Option<Purged>, DbError> {
        let mut tx = self.pool.begin().await?;
        let hash: Option<String> = sqlx::query_scalar("DELETE FROM file_info WHERE id = ? RETURNING content_hash")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(content_hash) = hash else { return Ok(None) };
        let refs: i64 =
            sqlx::query_scalar("UPDATE blobs SET ref_count = ref_count - 1 WHERE content_hash = ? RETURNING ref_count")
                .bind(&content_hash)
                .fetch_one(&mut *tx)
                .await?;
        if refs == 0 {
            sqlx::query("DELETE FROM blobs WHERE content_hash = ?").bind(&content_hash).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Some(Purged { content_hash, blob_released: refs == 0 }))
    }

    async fn used_bytes(&self, user_id: Uuid) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(file_size), 0) FROM file_info WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn set_thumbnail(&self, id: Uuid, state: ThumbState, size: Option<(i32, i32)>) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE file_info SET thumb_state = ?, width = COALESCE(?, width), height = COALESCE(?, height) \
             WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(size.map(|s| s.0))
        .bind(size.map(|s| s.1))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending_thumbnails(&self, limit: u32) -> Result<Vec<(Uuid, String)>, DbError> {
        Ok(sqlx::query_as(
            "SELECT id, content_hash FROM file_info WHERE thumb_state = 'pending' AND deleted_at IS NULL \
             ORDER BY upload_time LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn blob_ref_count(&self, content_hash: &str) -> Result<Option<i64>, DbError> {
        Ok(sqlx::query_scalar("SELECT ref_count FROM blobs WHERE content_hash = ?")
            .bind(content_hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn known_blobs(&self, hashes: &[String]) -> Result<Vec<String>, DbError> {
        let mut known = Vec::new();
        for batch in hashes.chunks(HASHES_PER_QUERY) {
            let mut b: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT content_hash FROM blobs WHERE content_hash IN (");
            let mut list = b.separated(", ");
            for hash in batch {
                list.push_bind(hash.clone());
            }
            b.push(")");
            known.extend(b.build_query_scalar::<String>().fetch_all(&self.pool).await?);
        }
        Ok(known)
    }

    async fn blob_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<BlobRecord>, DbError> {
        Ok(sqlx::query_as(
            "SELECT b.content_hash, b.size, b.ref_count, \
             (SELECT COUNT(*) FROM file_info f WHERE f.content_hash = b.content_hash) AS files \
             FROM blobs b WHERE b.content_hash > ? ORDER BY b.content_hash LIMIT ?",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn recount_blob(&self, content_hash: &str) -> Result<i64, DbError> {
        let mut tx = self.pool.begin().await?;
        let count: Option<i64> = sqlx::query_scalar(
            "UPDATE blobs SET ref_count = (SELECT COUNT(*) FROM file_info WHERE content_hash = ?1) \
             WHERE content_hash = ?1 RETURNING ref_count",
        )
        .bind(content_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if count == Some(0) {
            sqlx::query("DELETE FROM blobs WHERE content_hash = ?").bind(content_hash).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(count.unwrap_or(0))
    }

    async fn prune_audit(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM audit_logs WHERE id IN \
             (SELECT id FROM audit_logs WHERE timestamp < ? ORDER BY id LIMIT ?)",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), DbError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO audit_logs (timestamp, user_id, action, file_id, ip_address, user_agent, status, bytes, detail) ",
        );
        b.push_values(events, |mut row, e| {
            row.push_bind(micros(e.timestamp))
                .push_bind(e.user_id)
                .push_bind(e.action.clone())
                .push_bind(e.file_id)
                .push_bind(e.ip_address.clone())
                .push_bind(e.user_agent.clone())
                .push_bind(i32::from(e.status))
                .push_bind(e.bytes)
                .push_bind(e.detail.clone());
        });
        b.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, DbError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, timestamp, user_id, action, file_id, ip_address, user_agent, status, bytes, detail \
             FROM audit_logs WHERE ",
        );
        push_audit_query(&mut b, q, micros);
        let rows: Vec<AuditRow> = b.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    async fn day_stats(
        &self,
        date: chrono::NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<DayStats, DbError> {
        let (uploads, downloads, bytes_in, bytes_out, active_users): (i64, i64, i64, i64, i64) =
            sqlx::query_as(AssertSqlSafe(day_totals_sql(false)))
                .bind(micros(from))
                .bind(micros(to))
                .fetch_one(&self.pool)
                .await?;
        let top: Vec<(String, i64)> = sqlx::query_as(
            "SELECT mime_type, COUNT(*) AS n FROM file_info WHERE upload_time >= ? AND upload_time < ? \
             GROUP BY mime_type ORDER BY n DESC, mime_type LIMIT 5",
        )
        .bind(micros(from))
        .bind(micros(to))
        .fetch_all(&self.pool)
        .await?;
        let top_types = top.into_iter().map(|(mime_type, uploads)| TypeCount { mime_type, uploads }).collect();
        Ok(DayStats { date, uploads, downloads, bytes_in, bytes_out, active_users, top_types })
    }

    async fn create_share(&self, link: &ShareLink) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO share_links (id, file_id, created_by, created_at, expires_at, max_downloads) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(link.id)
        .bind(link.file_id)
        .bind(link.created_by)
        .bind(micros(link.created_at))
        .bind(micros(link.expires_at))
        .bind(link.max_downloads)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_share(&self, id: Uuid) -> Result<Option<ShareLink>, DbError> {
        let sql = format!("SELECT {SHARE_COLUMNS} FROM share_links WHERE id = ?");
        let row: Option<ShareRow> = sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.map(ShareLink::try_from).transpose()
    }

    async fn list_shares(&self, file_id: Uuid) -> Result<Vec<ShareLink>, DbError> {
        let sql = format!("SELECT {SHARE_COLUMNS} FROM share_links WHERE file_id = ? ORDER BY id");
        let rows: Vec<ShareRow> = sqlx::query_as(AssertSqlSafe(sql)).bind(file_id).fetch_all(&self.pool).await?;
        rows.into_iter().map(ShareLink::try_from).collect()
    }

    async fn revoke_share(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE share_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(micros(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn use_share(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE share_links SET downloads = downloads + 1 WHERE id = ? AND revoked_at IS NULL \
             AND expires_at > ? AND (max_downloads IS NULL OR downloads < max_downloads)",
        )
        .bind(id)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_files(&self, q: &FileQuery) -> Result<Vec<FileMeta>, DbError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {FILE_COLUMNS} FROM file_info f WHERE "));
        push_list_query(&mut b, q, micros, |b, needle| {
            // The trigram index answers substrings of three characters or more; shorter ones scan.
            if needle.chars().count() >= 3 {
                let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
                b.push("f.rowid IN (SELECT rowid FROM file_info_name_fts WHERE file_info_name_fts MATCH ")
                    .push_bind(phrase)
                    .push(")");
            } else {
                b.push("lower(f.name) LIKE lower(").push_bind(contains_pattern(needle)).push(") ESCAPE '\\'");
            }
        })?;
        let rows: Vec<FileRow> = b.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(FileMeta::try_from).collect()
    }
}
