//! Domain types shared by the database, cache and HTTP layers: users, keys, files and their rules.

pub(crate) mod audit;
pub(crate) mod names;

use chrono::{DateTime, Datelike as _, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a user may do: `admin` manages users and sees every file; `user` sees their own and public files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Admin,
    User,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// Who may read a file besides its owner and admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Visibility {
    /// Only the owner and admins.
    #[default]
    Private,
    /// Every authenticated caller.
    Public,
    /// The owner, admins, and whoever holds a live share link.
    Shared,
}

impl Visibility {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Public => "public",
            Visibility::Shared => "shared",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "private" => Some(Visibility::Private),
            "public" => Some(Visibility::Public),
            "shared" => Some(Visibility::Shared),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) role: Role,
    /// Storage quota in bytes; `null` means unlimited.
    pub(crate) quota_bytes: Option<i64>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) disabled_at: Option<DateTime<Utc>>,
}

/// An API key as listed: never the key itself, which only its creator sees once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ApiKey {
    pub(crate) id: Uuid,
    pub(crate) user_id: Uuid,
    /// The first characters of the key, to tell keys apart.
    pub(crate) prefix: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

/// The metadata of one stored file, as the API returns it and the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct FileMeta {
    pub(crate) id: Uuid,
    pub(crate) owner_id: Uuid,
    pub(crate) name: String,
    /// Sniffed from the bytes at upload, never taken from the client.
    pub(crate) mime_type: String,
    pub(crate) size: i64,
    /// BLAKE3 of the content, hex; the strong ETag of the content.
    pub(crate) content_hash: String,
    pub(crate) visibility: Visibility,
    pub(crate) tags: Vec<String>,
    pub(crate) upload_time: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) deleted_at: Option<DateTime<Utc>>,
    /// Pixel size, once an image's metadata has been extracted.
    #[serde(default)]
    pub(crate) width: Option<i32>,
    #[serde(default)]
    pub(crate) height: Option<i32>,
    /// Thumbnail progress for images; absent for other files.
    #[serde(default)]
    pub(crate) thumbnail: Option<ThumbState>,
}

/// Where an image's thumbnails are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ThumbState {
    /// Queued or being made.
    Pending,
    Ready,
    /// The image could not be decoded (corrupt, truncated, or beyond the decode limits).
    Failed,
}

impl ThumbState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ThumbState::Pending => "pending",
            ThumbState::Ready => "ready",
            ThumbState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ThumbState::Pending),
            "ready" => Some(ThumbState::Ready),
            "failed" => Some(ThumbState::Failed),
            _ => None,
        }
    }
}

/// The caller of a request, resolved from its API key.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user: User,
    /// The key the request came with (rate limits are per key).
    pub(crate) key_id: Uuid,
}

impl Caller {
    pub(crate) fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    pub(crate) fn can_read(&self, file: &FileMeta) -> bool {
        self.can_write(file) || file.visibility == Visibility::Public
    }

    pub(crate) fn can_write(&self, file: &FileMeta) -> bool {
        self.is_admin() || file.owner_id == self.user.id
    }
}

/// A file row to insert once its bytes are stored.
#[derive(Debug, Clone)]
pub(crate) struct NewFile {
    pub(crate) id: Uuid,
    pub(crate) owner_id: Uuid,
    pub(crate) name: String,
    pub(crate) mime_type: String,
    pub(crate) size: i64,
    pub(crate) content_hash: String,
    pub(crate) visibility: Visibility,
    pub(crate) tags: Vec<String>,
    pub(crate) now: DateTime<Utc>,
    /// `Pending` for images whose thumbnails are to be made.
    pub(crate) thumbnail: Option<ThumbState>,
}

/// A change to a file's metadata; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct FilePatch {
    pub(crate) name: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) visibility: Option<Visibility>,
}

/// A share link as stored and listed (the token is derived from it, never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ShareLink {
    pub(crate) id: Uuid,
    pub(crate) file_id: Uuid,
    pub(crate) created_by: Uuid,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) max_downloads: Option<i64>,
    pub(crate) downloads: i64,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

/// Orders of the file listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SortKey {
    #[default]
    UploadTime,
    Name,
    Size,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// The years a time from a client may fall in: what both backends can store and compare (PostgreSQL's
/// timestamps end in 294276 AD, chrono's dates in 262142; no file is that old or that new).
pub(crate) const STORABLE_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// The position after the last row of a page: the sort value and the id that breaks ties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) sort: SortKey,
    pub(crate) order: SortOrder,
    pub(crate) value: CursorValue,
    pub(crate) id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum CursorValue {
    Int(i64),
    Text(String),
}

impl Cursor {
    pub(crate) fn after(file: &FileMeta, sort: SortKey, order: SortOrder) -> Self {
        let value = match sort {
            SortKey::UploadTime => CursorValue::Int(file.upload_time.timestamp_micros()),
            SortKey::Name => CursorValue::Text(file.name.clone()),
            SortKey::Size => CursorValue::Int(file.size),
        };
        Cursor { sort, order, value, id: file.id }
    }

    /// Opaque to clients: URL-safe base64 of JSON.
    pub(crate) fn encode(&self) -> String {
        use base64::Engine as _;
        let json = serde_json::to_vec(self).expect("a cursor always serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub(crate) fn decode(s: &str) -> Option<Self> {
        use base64::Engine as _;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
        let cursor: Cursor = serde_json::from_slice(&json).ok()?;
        // Only values a page could have ended on: a time both backends can store, a size, a stored name.
        let plausible = match (cursor.sort, &cursor.value) {
            (SortKey::UploadTime, CursorValue::Int(us)) => {
                DateTime::from_timestamp_micros(*us).is_some_and(|t| STORABLE_YEARS.contains(&t.year()))
            }
            (SortKey::Size, CursorValue::Int(size)) => *size >= 0,
            (SortKey::Name, CursorValue::Text(name)) => names::sanitize_file_name(name).as_deref() == Some(name),
            _ => false,
        };
        plausible.then_some(cursor)
    }
}

/// A page request of the file listing, already validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileQuery {
    /// Whose files; `None` lists every user's (admins only).
    pub(crate) owner_id: Option<Uuid>,
    /// Files this user may read: their own and public ones (search); `None` for no such limit.
    pub(crate) readable_by: Option<Uuid>,
    /// Case-insensitive substring of the name (search).
    pub(crate) name_contains: Option<String>,
    pub(crate) mime_prefix: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) min_size: Option<i64>,
    pub(crate) max_size: Option<i64>,
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    pub(crate) deleted: bool,
    pub(crate) sort: SortKey,
    pub(crate) order: SortOrder,
    pub(crate) after: Option<Cursor>,
    pub(crate) limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_a_round_trip_and_rejects_garbage() {
        let cursor = Cursor {
            sort: SortKey::Name,
            order: SortOrder::Asc,
            value: CursorValue::Text("a.txt".into()),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        let mismatched = Cursor {
            sort: SortKey::Size,
            order: SortOrder::Asc,
            value: CursorValue::Text("x".into()),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&mismatched.encode()), None);
    }

    #[test]
    fn a_cursor_no_page_could_end_on_is_refused() {
        let id = Uuid::now_v7();
        let cursor = |sort, value| Cursor { sort, order: SortOrder::Desc, value, id }.encode();
        assert_eq!(Cursor::decode(&cursor(SortKey::UploadTime, CursorValue::Int(i64::MAX))), None);
        assert_eq!(Cursor::decode(&cursor(SortKey::UploadTime, CursorValue::Int(-1 << 62))), None);
        assert_eq!(Cursor::decode(&cursor(SortKey::Size, CursorValue::Int(-1))), None);
        assert_eq!(Cursor::decode(&cursor(SortKey::Name, CursorValue::Text("a\0b".into()))), None);
        assert_eq!(Cursor::decode(&cursor(SortKey::Name, CursorValue::Text("x".repeat(300)))), None);
        assert!(Cursor::decode(&cursor(SortKey::UploadTime, CursorValue::Int(1_780_000_000_000_000))).is_some());
        assert!(Cursor::decode(&cursor(SortKey::Name, CursorValue::Text("보고서.pdf".into()))).is_some());
    }
}
