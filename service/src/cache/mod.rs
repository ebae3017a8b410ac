//! The cache: the performance guide's key families and TTLs over a pluggable backend (in-process or Redis).
//!
//! [`Cache`] is what the service calls. It builds keys (`{namespace}:{family}:{id}`), counts a hit or a miss
//! per family on every lookup, and never lets a backend failure fail a request: a failed read counts as a miss
//! (and in `cache_errors_total`), a failed write or delete is counted. Single failures are logged at debug
//! level only: during an outage every request fails one, and the backend logs the outage itself once.

pub(crate) mod memory;
pub(crate) mod near;
pub(crate) mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use metrics::{Counter, Gauge, Label};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("cache backend: {0}")]
    Backend(String),
    /// The backend was not asked: it failed repeatedly and is being left alone for a while.
    #[error("cache backend skipped while its circuit is open")]
    Skipped,
}

/// The generation folded into every `search:{query_hash}` key.
pub(crate) const SEARCH_GENERATION: &str = "search";

/// A key family of the performance guide's cache contract.
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

    /// The key pattern's fixed part, as the performance guide writes it.
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
    /// The value of `key` and its [`Mark`], read at once: what a miss loads is stored with [`Self::fill`].
    async fn get_marked(&self, key: &str) -> Result<(Option<Bytes>, Mark), CacheError>;
    /// Stores `value` unless `key` was invalidated, by any instance sharing the cache, since `mark` was read.
    async fn fill(&self, key: &str, value: Bytes, ttl: Duration, mark: Mark) -> Result<(), CacheError>;
    /// Removes `keys` and moves their marks on: a fill that read a mark before this stores nothing.
    async fn delete(&self, keys: &[String]) -> Result<(), CacheError>;
    /// Adds one to a counter (created at 0) and returns the new value; counters do not expire.
    async fn incr(&self, key: &str) -> Result<u64, CacheError>;
    /// A counter's value; 0 when it was never incremented.
    async fn counter(&self, key: &str) -> Result<u64, CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
    /// Whether other instances may share this cache (and so must hear of changes through it).
    fn is_shared(&self) -> bool;
    /// One request against a GCRA limit shared by every instance (`interval` between requests, `burst` at once);
    /// `None` when this backend keeps no shared state (the caller limits locally).
    async fn rate_limit(&self, key: &str, interval: Duration, burst: u32) -> Result<Option<RateDecision>, CacheError>;
}

/// Where a key's invalidations stood when a load began. A load reads the database after it reads the mark, so a
/// change committed after the read invalidates after it too, and moves the mark: the fill then stores nothing, on
/// whichever instance it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark(pub(crate) u64);

/// The outcome of one request against a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateDecision {
    pub(crate) allowed: bool,
    /// Further requests allowed right now.
    pub(crate) remaining: u32,
    /// Until a refused request may be retried.
    pub(crate) retry_after: Duration,
    /// Until the whole burst is available again.
    pub(crate) reset: Duration,
}

struct FamilyCounters {
    hits: Counter,
    misses: Counter,
    /// Mirrors of the two counters (a `metrics` counter cannot be read back), for the ratio gauge.
    hit_count: AtomicU64,
    miss_count: AtomicU64,
    ratio: Gauge,
}

/// One load in progress per key: concurrent misses wait for it instead of each reading the database.
type InFlight = Mutex<HashMap<String, Arc<OnceCell<Option<Bytes>>>>>;

/// Removes a key's in-flight load from the map when dropped, unless a newer load took its place.
struct InFlightEntry<'a> {
    map: &'a InFlight,
    key: &'a str,
    cell: &'a Arc<OnceCell<Option<Bytes>>>,
}

impl Drop for InFlightEntry<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight.get(self.key).is_some_and(|c| Arc::ptr_eq(c, self.cell)) {
            in_flight.remove(self.key);
        }
    }
}

/// The service's view of the cache; cheap to clone.
#[derive(Clone)]
pub(crate) struct Cache {
    backend: Arc<dyn CacheBackend>,
    namespace: Arc<str>,
    counters: Arc<[FamilyCounters; 6]>,
    errors: Counter,
    skipped: Counter,
    in_flight: Arc<InFlight>,
    /// Fault injection for tests: a wait between a load and its fill (`cache.fill_delay`).
    fill_delay: Duration,
}

impl Cache {
    pub(crate) fn new(backend: Arc<dyn CacheBackend>, namespace: &str, metrics: &Metrics) -> Self {
        let counters = Family::ALL.map(|f| FamilyCounters {
            hits: metrics.counter("cache_hits_total", vec![Label::new("cache_type", f.label())]),
            misses: metrics.counter("cache_misses_total", vec![Label::new("cache_type", f.label())]),
            hit_count: AtomicU64::new(0),
            miss_count: AtomicU64::new(0),
            ratio: metrics.gauge("cache_hit_ratio", vec![Label::new("cache_type", f.label())]),
        });
        Self {
            backend,
            namespace: namespace.into(),
            counters: Arc::new(counters),
            errors: metrics.counter("cache_errors_total", Vec::new()),
            skipped: metrics.counter("cache_skipped_total", Vec::new()),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            fill_delay: Duration::ZERO,
        }
    }

    /// Makes every load wait `delay` between reading the database and filling the cache (tests only).
    pub(crate) fn with_fill_delay(self, delay: Duration) -> Self {
        Self { fill_delay: delay, ..self }
    }

    pub(crate) fn key(&self, family: Family, id: &str) -> String {
        format!("{}:{}:{}", self.namespace, family.key_prefix(), id)
    }

    /// Raw bytes of `family`/`id`, counted like any lookup (tests look with it).
    #[cfg(test)]
    pub(crate) async fn get_bytes(&self, family: Family, id: &str) -> Option<Bytes> {
        let found = self.backend.get_marked(&self.key(family, id)).await.ok().and_then(|(value, _)| value);
        self.count(family, found.is_some());
        found
    }

    fn count(&self, family: Family, hit: bool) {
        let c = &self.counters[family.index()];
        if hit {
            c.hits.increment(1);
            c.hit_count.fetch_add(1, Ordering::Relaxed);
        } else {
            c.misses.increment(1);
            c.miss_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets `cache_hit_ratio{cache_type}` from the hit and miss counts so far (families never looked up stay 0).
    pub(crate) fn publish_hit_ratios(&self) {
        for c in self.counters.iter() {
            let hits = c.hit_count.load(Ordering::Relaxed) as f64;
            let total = hits + c.miss_count.load(Ordering::Relaxed) as f64;
            c.ratio.set(if total > 0.0 { hits / total } else { 0.0 });
        }
    }

    /// The cached bytes of `family`/`id`, or what `load` returns, stored for next time.
    /// Concurrent misses on one key share a single `load`: a hot key expiring does not stampede the database.
    ///
    /// A change committed while `load` read the old row must not leave that row cached, whichever instance made
    /// the change. The key's [`Mark`] is read with the lookup, before `load`; a change invalidates after it
    /// commits, which moves the mark; the fill stores only if the mark has not moved. (A backend that cannot be
    /// read gives no mark, and its fill is skipped too.)
    pub(crate) async fn get_or_load_bytes<E>(
        &self,
        family: Family,
        id: &str,
        load: impl AsyncFnOnce() -> Result<Option<Bytes>, E>,
    ) -> Result<Option<Bytes>, E> {
        let key = self.key(family, id);
        let mark = match self.backend.get_marked(&key).await {
            Ok((Some(hit), _)) => {
                self.count(family, true);
                return Ok(Some(hit));
            }
            Ok((None, mark)) => Some(mark),
            Err(e) => {
                self.failed(&e, "read");
                None
            }
        };
        self.count(family, false);
        let cell = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.entry(key.clone()).or_default().clone()
        };
        // The entry goes when this load ends, however it ends: a request cancelled mid-load (its client went
        // away) must not leave its key behind, or the map grows with every key that is never asked for again.
        let _entry = InFlightEntry { map: &self.in_flight, key: &key, cell: &cell };
        cell.get_or_try_init(async || {
            let loaded = load().await?;
            if !self.fill_delay.is_zero() {
                tokio::time::sleep(self.fill_delay).await;
            }
            if let (Some(bytes), Some(mark)) = (&loaded, mark)
                && let Err(e) = self.backend.fill(&key, bytes.clone(), family.ttl(), mark).await
            {
                self.failed(&e, "write");
            }
            Ok(loaded)
        })
        .await
        .cloned()
    }

    /// [`Cache::get_or_load_bytes`] for a JSON value.
    pub(crate) async fn get_or_load_json<T: Serialize + DeserializeOwned, E>(
        &self,
        family: Family,
        id: &str,
        load: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        let bytes = self
            .get_or_load_bytes(family, id, async || {
                Ok(load().await?.and_then(|v| serde_json::to_vec(&v).ok()).map(Bytes::from))
            })
            .await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Stores `value` as a load would (tests store with it).
    #[cfg(test)]
    pub(crate) async fn set_bytes(&self, family: Family, id: &str, value: Bytes) {
        let key = self.key(family, id);
        let (_, mark) = self.backend.get_marked(&key).await.expect("the backend answers");
        self.backend.fill(&key, value, family.ttl(), mark).await.expect("the backend answers");
    }

    /// Forgets everything cached about a file — metadata, small content, thumbnails — and moves the search
    /// generation, so no cached search lists it as it was. Called after every change to a file.
    pub(crate) async fn file_changed(&self, file_id: Uuid) {
        self.invalidate_file(file_id).await;
        self.bump_generation(SEARCH_GENERATION).await;
    }

    /// Forgets everything cached about a file: its metadata, small content and thumbnails.
    pub(crate) async fn invalidate_file(&self, file_id: Uuid) {
        let id = file_id.to_string();
        let thumbnails = ["small", "medium", "large"].map(|size| self.key(Family::Thumbnail, &format!("{id}:{size}")));
        let keys: Vec<String> = [Family::FileMeta, Family::FileContent, Family::Thumbnail]
            .map(|f| self.key(f, &id))
            .into_iter()
            .chain(thumbnails)
            .collect();
        self.invalidate(&keys).await;
    }

    /// The current value of generation counter `name` (`{namespace}:gen:{name}`); `None` when the backend failed.
    /// Generations let every instance sharing the cache notice a change without scanning keys.
    pub(crate) async fn generation(&self, name: &str) -> Option<u64> {
        match self.backend.counter(&format!("{}:gen:{name}", self.namespace)).await {
            Ok(g) => Some(g),
            Err(e) => {
                self.failed(&e, "generation read");
                None
            }
        }
    }

    /// Moves generation counter `name` on, telling every instance that what it names changed.
    pub(crate) async fn bump_generation(&self, name: &str) {
        if let Err(e) = self.backend.incr(&format!("{}:gen:{name}", self.namespace)).await {
            self.failed(&e, "generation bump");
        }
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// A shared rate-limit decision (`None` without a shared backend or when it failed: limit locally).
    pub(crate) async fn rate_limit(&self, id: &str, interval: Duration, burst: u32) -> Option<RateDecision> {
        match self.backend.rate_limit(&format!("{}:ratelimit:{id}", self.namespace), interval, burst).await {
            Ok(decision) => decision,
            Err(e) => {
                self.failed(&e, "rate limit");
                None
            }
        }
    }

    /// Forgets a user's cached permissions.
    pub(crate) async fn invalidate_user(&self, user_id: Uuid) {
        self.invalidate(&[self.key(Family::UserPerm, &user_id.to_string())]).await;
    }

    async fn invalidate(&self, keys: &[String]) {
        if let Err(e) = self.backend.delete(keys).await {
            self.failed(&e, "invalidation");
        }
    }

    /// Counts a failed cache call: a real failure in `cache_errors_total`, a call the circuit skipped in
    /// `cache_skipped_total`. Single failures are logged at debug level only (see the module docs).
    fn failed(&self, e: &CacheError, what: &'static str) {
        match e {
            CacheError::Skipped => self.skipped.increment(1),
            CacheError::Backend(_) => {
                self.errors.increment(1);
                tracing::debug!(error = %e, what, "cache call failed");
            }
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

    #[tokio::test(start_paused = true)]
    async fn a_load_cancelled_midway_leaves_no_entry_behind() {
        let cache = Cache::new(Arc::new(memory::MemoryCache::new(1024)), "fwb", &Metrics::new());
        let never = async || std::future::pending::<Result<Option<Bytes>, ()>>().await;
        for id in ["a", "b", "c"] {
            let load = cache.get_or_load_bytes(Family::Search, id, never);
            assert!(tokio::time::timeout(Duration::from_millis(10), load).await.is_err());
        }
        assert_eq!(cache.in_flight.lock().unwrap().len(), 0, "cancelled loads kept their keys");
        let loaded = cache.get_or_load_bytes(Family::Search, "a", async || Ok::<_, ()>(Some(Bytes::from("x")))).await;
        assert_eq!(loaded.unwrap(), Some(Bytes::from("x")));
        assert_eq!(cache.in_flight.lock().unwrap().len(), 0);
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
    async fn concurrent_misses_on_one_key_load_once() {
        let metrics = Metrics::new();
        let cache = Cache::new(Arc::new(memory::MemoryCache::new(1 << 20)), "t", &metrics);
        let loads = AtomicU64::new(0);
        let load = async || {
            loads.fetch_add(1, Ordering::SeqCst);
            // Stay in flight long enough for every other caller to arrive.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::convert::Infallible>(Some(Bytes::from_static(b"v")))
        };
        let calls = (0..100).map(|_| cache.get_or_load_bytes(Family::FileMeta, "hot", load));
        let results = futures_util::future::join_all(calls).await;
        assert!(results.iter().all(|r| r.as_ref().unwrap().as_deref() == Some(&b"v"[..])));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.publish_hit_ratios();
        assert!(metrics.render().contains("cache_hit_ratio{cache_type=\"file_meta\"} 0"));
    }

    #[tokio::test]
    async fn a_load_that_raced_an_invalidation_does_not_leave_the_old_value_cached() {
        let metrics = Metrics::new();
        let cache = Cache::new(Arc::new(memory::MemoryCache::new(1 << 20)), "t", &metrics);
        let id = Uuid::now_v7();
        let key = id.to_string();
        let (read_old_row, changed) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let load = async || {
            read_old_row.notify_one();
            // The row is changed and the cache invalidated after this load read it.
            changed.notified().await;
            Ok::<_, ()>(Some(Bytes::from_static(b"old")))
        };
        let loading = cache.get_or_load_bytes(Family::FileMeta, &key, load);
        let change = async {
            read_old_row.notified().await;
            cache.file_changed(id).await;
            changed.notify_one();
        };
        let (loaded, ()) = tokio::join!(loading, change);
        assert_eq!(loaded.unwrap().as_deref(), Some(&b"old"[..]), "the caller still gets what it read");
        assert_eq!(cache.get_bytes(Family::FileMeta, &key).await, None, "but it is not cached");
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
