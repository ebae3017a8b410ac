//! Doors for the criterion benches (`benches/hot_paths.rs`) onto crate-private code, so that each bench
//! times the service's own code rather than a copy of it. Not an API: hidden from the docs, may change.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use crate::blob::BlobStore;
use crate::blob::local::LocalStore;
use crate::cache::memory::MemoryCache;
use crate::cache::{Cache, Family};
use crate::domain::{FileMeta, ThumbState, Visibility};
use crate::telemetry::Metrics;

/// Cache keys as the service builds them.
pub struct CacheKeys(Cache);

impl CacheKeys {
    pub fn new(namespace: &str) -> Self {
        Self(Cache::new(Arc::new(MemoryCache::new(1 << 20)), namespace, &Metrics::new()))
    }

    /// `{namespace}:file:meta:{id}`.
    pub fn file_meta(&self, id: &str) -> String {
        self.0.key(Family::FileMeta, id)
    }
}

/// A typical file's metadata, as cached at `file:meta:{id}`.
pub struct Meta(FileMeta);

impl Meta {
    pub fn sample() -> Self {
        let now = Utc::now();
        Self(FileMeta {
            id: Uuid::now_v7(),
            owner_id: Uuid::now_v7(),
            name: "quarterly-report-2026.pdf".into(),
            mime_type: "application/pdf".into(),
            size: 1_234_567,
            content_hash: blake3::hash(b"sample").to_hex().to_string(),
            visibility: Visibility::Private,
            tags: vec!["finance".into(), "q3".into()],
            upload_time: now,
            updated_at: now,
            deleted_at: None,
            width: None,
            height: None,
            thumbnail: Some(ThumbState::Ready),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("metadata serializes")
    }

    pub fn decode(json: &[u8]) -> Self {
        Self(serde_json::from_slice(json).expect("metadata deserializes"))
    }
}

/// The ranges a `Range` header selects from a file of `size` bytes (0: the whole file or refused).
pub fn ranges(header: &str, size: u64) -> usize {
    let value = http::HeaderValue::from_str(header).expect("a header value");
    match crate::http::conditional::requested_ranges(&value, size) {
        Ok(Some(ranges)) => ranges.len(),
        _ => 0,
    }
}

/// Small, medium and large JPEG thumbnails of an encoded image; returns their total size.
pub fn thumbnails(image: &[u8]) -> usize {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(1 << 30);
    let rendered = crate::media::thumbnail::render(image, limits).expect("a decodable image");
    rendered.jpegs.iter().map(|(_, jpeg)| jpeg.len()).sum()
}

/// The upload path's inner loop: bytes hashed and written to a blob's temporary file.
pub struct Ingest {
    store: LocalStore,
    _dir: tempfile::TempDir,
}

impl Ingest {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = LocalStore::open(dir.path().to_owned()).await.expect("a blob dir");
        Self { store, _dir: dir }
    }

    /// Writes `chunks` through a blob writer (hashing as it goes) and returns the hash; the temporary file
    /// is dropped, not made durable, so the figure is hashing plus buffered writing, without fsync.
    pub async fn write(&self, chunks: &[Bytes]) -> String {
        let mut writer = self.store.writer().await.expect("a writer");
        for chunk in chunks {
            writer.write(chunk).await.expect("written");
        }
        writer.content_hash()
    }
}
