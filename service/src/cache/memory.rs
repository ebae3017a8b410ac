//! The in-process cache backend (moka): bounded by the bytes it holds, each entry with its family's TTL.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache as Moka;

use std::sync::atomic::{AtomicU64, Ordering};

use super::{CacheBackend, CacheError, Mark, RateDecision};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub(crate) struct MemoryCache {
    inner: Moka<String, Entry>,
    /// Counters live apart from cached values: they must not be evicted.
    counters: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Every key's mark at once: one process has no other instance to hear from, and an invalidation of any
    /// key during a load costs only that load's fill.
    invalidations: AtomicU64,
}

impl MemoryCache {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let inner = Moka::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, entry: &Entry| u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        Self { inner, counters: Default::default(), invalidations: AtomicU64::new(0) }
    }
}

#[async_trait]
impl CacheBackend for MemoryCache {
    async fn get_marked(&self, key: &str) -> Result<(Option<Bytes>, Mark), CacheError> {
        let mark = Mark(self.invalidations.load(Ordering::SeqCst));
        Ok((self.inner.get(key).await.map(|e| e.value), mark))
    }

    /// Stores, then takes the value back out if an invalidation came since the mark: either this check sees the
    /// invalidation's count move, or its removal comes after this store.
    async fn fill(&self, key: &str, value: Bytes, ttl: Duration, mark: Mark) -> Result<(), CacheError> {
        self.inner.insert(key.to_owned(), Entry { value, ttl }).await;
        if self.invalidations.load(Ordering::SeqCst) != mark.0 {
            self.inner.invalidate(key).await;
        }
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        for key in keys {
            self.inner.invalidate(key).await;
        }
        Ok(())
    }

    async fn incr(&self, key: &str) -> Result<u64, CacheError> {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let value = counters.entry(key.to_owned()).or_insert(0);
        *value += 1;
        Ok(*value)
    }

    async fn counter(&self, key: &str) -> Result<u64, CacheError> {
        Ok(self.counters.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn rate_limit(&self, _: &str, _: Duration, _: u32) -> Result<Option<RateDecision>, CacheError> {
        Ok(None)
    }
}
