//! Audit events: who did what to which file, from where, with what outcome; and the day's statistics.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One audited action, as written to `audit_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct AuditEvent {
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) user_id: Option<Uuid>,
    /// `file.upload`, `file.download`, `key.revoke`, `auth.denied`, …
    pub(crate) action: String,
    pub(crate) file_id: Option<Uuid>,
    pub(crate) ip_address: Option<String>,
    pub(crate) user_agent: Option<String>,
    /// The HTTP status the action ended with.
    pub(crate) status: u16,
    /// Bytes received (uploads) or sent (downloads).
    pub(crate) bytes: Option<i64>,
    pub(crate) detail: Option<String>,
}

/// An audit row as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    pub(crate) id: i64,
    #[serde(flatten)]
    pub(crate) event: AuditEvent,
}

/// A page request of the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditQuery {
    pub(crate) user_id: Option<Uuid>,
    pub(crate) action: Option<String>,
    pub(crate) ip_address: Option<String>,
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    /// Rows with an id below this (the previous page's last id).
    pub(crate) before_id: Option<i64>,
    pub(crate) limit: u32,
}

/// Figures of one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct DayStats {
    pub(crate) date: chrono::NaiveDate,
    pub(crate) uploads: i64,
    pub(crate) downloads: i64,
    pub(crate) bytes_in: i64,
    pub(crate) bytes_out: i64,
    /// Distinct users with at least one audited action that day.
    pub(crate) active_users: i64,
    /// The most uploaded content types, most first.
    pub(crate) top_types: Vec<TypeCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct TypeCount {
    pub(crate) mime_type: String,
    pub(crate) uploads: i64,
}
