//! The blob store: file bytes, content-addressed by their BLAKE3 hash.
//!
//! [`BlobStore`] is the interface; a local directory is the one backend.
//! Bytes arrive through a [`BlobWriter`] that hashes while it writes; nothing is visible under
//! its hash until [`BlobWriter::finish`] has made it durable, and a writer dropped early leaves nothing.

pub(crate) mod local;

use std::ops::Range;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::AsyncRead;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("blob store i/o: {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl BlobError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> BlobError {
        move |source| BlobError::Io { context, source }
    }
}

/// What a finished write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredBlob {
    /// Lowercase hex BLAKE3 of the bytes.
    pub(crate) hash: String,
    pub(crate) size: u64,
}

pub(crate) type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A stored blob as a listing sees it.
#[derive(Debug, Clone)]
pub(crate) struct BlobEntry {
    pub(crate) hash: String,
    pub(crate) size: u64,
    /// When its bytes were stored or last reused by an upload.
    pub(crate) modified: SystemTime,
}

#[async_trait]
pub(crate) trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob; its bytes stay private to the writer until `finish`.
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError>;
    /// Reads `range` of the blob (or all of it).
    async fn read(&self, hash: &str, range: Option<Range<u64>>) -> Result<BlobReader, BlobError>;
    /// Removes a blob; removing one that is already gone is not an error.
    async fn delete(&self, hash: &str) -> Result<(), BlobError>;
    /// Whether the store can be written, for readiness.
    async fn check(&self) -> Result<(), BlobError>;
    /// The blobs whose hash starts with `prefix` (two hex digits), so a sweep holds 1/256 of them at a time.
    async fn list(&self, prefix: &str) -> Result<Vec<BlobEntry>, BlobError>;
    /// The size of a stored blob, `None` when it is not stored.
    async fn size_of(&self, hash: &str) -> Result<Option<u64>, BlobError>;
    /// Removes temporary files of writes not touched for `idle` (left by a crash); returns how many.
    /// Writes in flight touch theirs far more often, so they are never removed.
    async fn remove_stale_temp_files(&self, idle: Duration) -> Result<usize, BlobError>;
}

#[async_trait]
pub(crate) trait BlobWriter: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// The hash of the bytes written so far: the name `finish` will store them under.
    fn content_hash(&self) -> String;
    /// Makes the blob durable under its hash. Identical content already stored is kept as it is.
    async fn finish(self: Box<Self>) -> Result<StoredBlob, BlobError>;
}

/// A fixed set of mutexes picked by content hash: enough to keep unrelated uploads apart.
pub(crate) struct BlobLocks([tokio::sync::Mutex<()>; 64]);

impl BlobLocks {
    pub(crate) fn new() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }

    pub(crate) async fn lock(&self, hash: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let slot = hash.bytes().fold(0usize, |acc, b| acc.wrapping_mul(31).wrapping_add(usize::from(b)));
        self.0[slot % self.0.len()].lock().await
    }
}
