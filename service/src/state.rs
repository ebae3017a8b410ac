//! The application state every request handler and background task shares, built once at startup.

use std::ops::Deref;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::auth::KeyCache;
use crate::blob::{BlobLocks, BlobStore};
use crate::cache::Cache;
use crate::config::Config;
use crate::db::MetaStore;
use crate::share_token::ShareKey;
use crate::telemetry::Metrics;

/// Everything a request handler may use; built once at startup.
pub(crate) struct AppContext {
    pub(crate) config: Config,
    /// Metadata: users, keys, files. Owned here; the only handle to the database.
    pub(crate) db: Arc<dyn MetaStore>,
    /// File bytes.
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// Makes and keeps image thumbnails in the background.
    pub(crate) thumbnails: Arc<crate::media::thumbnail::Thumbnailer>,
    pub(crate) cache: Cache,
    /// Which key belongs to whom, so authentication needs no database query once warm.
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) audit: AuditLog,
    /// Request limits per key and route class.
    pub(crate) limits: crate::ratelimit::Limits,
    /// Signs and checks share tokens.
    pub(crate) share_key: ShareKey,
    pub(crate) metrics: Metrics,
    /// Serialises storing and releasing the same content, so a purge cannot remove bytes an upload just reused.
    pub(crate) blob_locks: BlobLocks,
}

#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<AppContext>);

impl Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}
