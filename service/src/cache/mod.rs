//! The cache: the seed's key families and TTLs over a pluggable backend (in-process now, Redis next).
//!
//! [`Cache`] is what the service calls. It builds keys (`{namespace}:{family}:{id}`), counts a hit or a miss
//! per family on every lookup, and never lets a backend failure fail a request: a failed read counts as a miss
//! (and in `cache_errors_total`), a failed write or delete is logged and counted.

pub(crate) mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use metrics::{Counter, Label};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[allow(dead_code, reason = "the in-process backend cannot fail; the Redis backend (next issue) reports here")]
    #[error("cache backend: {0}")]
    Backend(String),
}

/// A key family of the seed's cache contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    FileMeta,
    UserPerm,
    FileContent,
    Search,
    Stats,
    Thumbnail,
}

impl Family {
    pub(crate) const ALL: [Family; 6] =
        [Family::FileMeta, Family::UserPerm, Family::FileContent, Family::Search, Family::Stats, Family::Thumbnail];

    /// The key pattern's fixed part, as the seed writes it.
    pub(crate) fn key_prefix(self) -> &'static str {
        match self {
            Family::FileMeta => "file:meta",
            Family::UserPerm => "user:perm",
            Family::FileContent => "file:content",
            Family::Search => "search",
            Family::Stats => "stats",
            Family::Thumbnail => "file:thumbnail",
        }
    }

    pub(crate) fn ttl(self) -> Duration {
        Duration::from_secs(match self {
            Family::FileMeta => 3600,
            Family::UserPerm => 1800,
            Family::FileContent => 300,
            Family::Search => 600,
            Family::Stats => 3600,
            Family::Thumbnail => 3600,
        })
    }

    /// The `cache_type` label of the hit/miss counters.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Family::FileMeta => "file_meta",
            Family::UserPerm => "user_perm",
            Family::FileContent => "file_content",
            Family::Search => "search",
            Family::Stats => "stats",
            Family::Thumbnail => "thumbnail",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where cached bytes live. Keys arrive complete (namespace included).
#[async_trait]
pub(crate) trait CacheBackend: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    async fn delete(&self, keys: &[String]) -> Result<(), CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
}

struct FamilyCounters {
    hits: Counter,
    misses: Counter,
}

/// The service's view of the cache; cheap to clone.
#[derive(Clone)]
pub(crate) struct Cache {
    backend: Arc<dyn CacheBackend>,
    namespace: Arc<str>,
    counters: Arc<[FamilyCounters; 6]>,
    errors: Counter,
}

impl Cache {
    pub(crate) fn new(backend: Arc<dyn CacheBackend>, namespace: &str, metrics: &Metrics) -> Self {
        let counters = Family::ALL.map(|f| FamilyCounters {
            hits: metrics.counter("cache_hits_total", vec![Label::new("cache_type", f.label())]),
            misses: metrics.counter("cache_misses_total", vec![Label::new("cache_type", f.label())]),
        });
        Self {
            backend,
            namespace: namespace.into(),
            counters: Arc::new(counters),
            errors: metrics.counter("cache_errors_total", Vec::new()),
        }
    }

    pub(crate) fn key(&self, family: Family, id: &str) -> String {
        format!("{}:{}:{}", self.namespace, family.key_prefix(), id)
    }

    /// Raw bytes of `family`/`id`; a backend error is a counted miss.
    pub(crate) async fn get_bytes(&self, family: Family, id: &str) -> Option<Bytes> {
        let found = match self.backend.get(&self.key(family, id)).await {
            Ok(v) => v,
            Err(e) => {
                self.errors.increment(1);
                tracing::warn!(error = %e, family = family.label(), "cache read failed; treating as a miss");
                None
            }
        };
        let c = &self.counters[family.index()];
        if found.is_some() {
            c.hits.increment(1)
        } else {
            c.misses.increment(1)
        }
        found
    }

    pub(crate) async fn set_bytes(&self, family: Family, id: &str, value: Bytes) {
        if let Err(e) = self.backend.set(&self.key(family, id), value, family.ttl()).await {
            self.errors.increment(1);
            tracing::warn!(error = %e, family = family.label(), "cache write failed");
        }
    }

    /// A JSON value; an entry that no longer decodes (an older format) is a miss.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, family: Family, id: &str) -> Option<T> {
        let bytes = self.get_bytes(family, id).await?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) async fn set_json<T: Serialize>(&self, family: Family, id: &str, value: &T) {
        match serde_json::to_vec(value) {
            Ok(json) => self.set_bytes(family, id, Bytes::from(json)).await,
            Err(e) => tracing::warn!(error = %e, "cache value does not serialize"),
        }
    }

    /// Forgets everything cached about a file: its metadata, small content and thumbnail.
    pub(crate) async fn invalidate_file(&self, file_id: Uuid) {
        let id = file_id.to_string();
        let keys = [Family::FileMeta, Family::FileContent, Family::Thumbnail].map(|f| self.key(f, &id));
        if let Err(e) = self.backend.delete(&keys).await {
            self.errors.increment(1);
            tracing::warn!(error = %e, %file_id, "cache invalidation failed");
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), CacheError> {
        self.backend.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_patterns_under_the_namespace() {
        let metrics = Metrics::new();
        let cache = Cache::new(Arc::new(memory::MemoryCache::new(1024)), "fwb", &metrics);
        assert_eq!(cache.key(Family::FileMeta, "42"), "fwb:file:meta:42");
        assert_eq!(cache.key(Family::UserPerm, "7"), "fwb:user:perm:7");
        assert_eq!(cache.key(Family::FileContent, "42"), "fwb:file:content:42");
        assert_eq!(cache.key(Family::Search, "ab"), "fwb:search:ab");
        assert_eq!(cache.key(Family::Stats, "2026-11-26"), "fwb:stats:2026-11-26");
        assert_eq!(cache.key(Family::Thumbnail, "42"), "fwb:file:thumbnail:42");
        assert_eq!(Family::FileContent.ttl(), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn lookups_count_hits_and_misses_per_family() {
        let metrics = Metrics::new();
        let cache = Cache::new(Arc::new(memory::MemoryCache::new(1 << 20)), "t", &metrics);
        assert_eq!(cache.get_bytes(Family::FileMeta, "1").await, None);
        cache.set_bytes(Family::FileMeta, "1", Bytes::from_static(b"x")).await;
        assert_eq!(cache.get_bytes(Family::FileMeta, "1").await.as_deref(), Some(&b"x"[..]));
        let text = metrics.render();
        assert!(text.contains("cache_hits_total{cache_type=\"file_meta\"} 1"), "{text}");
        assert!(text.contains("cache_misses_total{cache_type=\"file_meta\"} 1"), "{text}");
    }

    #[tokio::test]
    async fn invalidating_a_file_drops_its_meta_content_and_thumbnail() {
        let metrics = Metrics::new();
        let cache = Cache::new(Arc::new(memory::MemoryCache::new(1 << 20)), "t", &metrics);
        let id = Uuid::now_v7();
        for f in [Family::FileMeta, Family::FileContent, Family::Thumbnail] {
            cache.set_bytes(f, &id.to_string(), Bytes::from_static(b"v")).await;
        }
        cache.invalidate_file(id).await;
        for f in [Family::FileMeta, Family::FileContent, Family::Thumbnail] {
            assert_eq!(cache.get_bytes(f, &id.to_string()).await, None, "{f:?}");
        }
    }
}
