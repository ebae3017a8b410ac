//! The near cache: hot entries kept in this process in front of Redis, so a warm request asks nothing over the
//! network. It is bounded by the bytes it holds, and is kept coherent by Redis itself.
//!
//! A dedicated RESP3 connection turns on server-assisted client-side caching in broadcast mode
//! (`CLIENT TRACKING ON BCAST PREFIX {namespace}:file:meta: …`). From then on Redis pushes an `invalidate`
//! message on that connection for every write, delete or expiry of a key under those prefixes, whichever
//! instance made it, and the entry is dropped here as the message is read.
//!
//! Two rules keep it from serving what Redis no longer holds:
//! - **Only while tracking is on.** Invalidations sent while the tracking connection was down are lost, so when
//!   it drops the near cache is emptied and bypassed until tracking is on again.
//! - **A value read from Redis is kept only if no invalidation of its key arrived since before the read.**
//!   Otherwise an invalidation read before the value is stored would be lost. Each key hashes to one of
//!   [`STRIPES`] counters that every invalidation of a key in that stripe moves on; a read notes its stripe's
//!   count before it asks Redis and stores only if it has not moved.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use redis::aio::AsyncPushSender;
use redis::{PushInfo, PushKind, Value};

/// Invalidation counters, so one busy key does not keep every other from being kept.
const STRIPES: usize = 1024;

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
}

/// What a read noted before it asked Redis; see [`NearCache::keep`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    count: u64,
    resets: u64,
}

pub(crate) struct NearCache {
    entries: moka::sync::Cache<String, Entry>,
    stripes: Box<[AtomicU64]>,
    /// Moves on each time the whole cache is emptied (tracking lost or restarted, a flush).
    resets: AtomicU64,
    /// Whether tracking is on: only then is anything served or kept.
    live: AtomicBool,
    hasher: std::collections::hash_map::RandomState,
}

impl NearCache {
    pub(crate) fn new(capacity_bytes: u64) -> Arc<Self> {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, entry: &Entry| u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        Arc::new(Self {
            entries,
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            resets: AtomicU64::new(0),
            live: AtomicBool::new(false),
            hasher: Default::default(),
        })
    }

    /// The value of `key` if it is here and tracking is on.
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries.get(key).map(|e| e.value)
    }

    /// To be taken before `key` is read from Redis, and given back to [`NearCache::keep`] with what was read.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe(key);
        let resets = self.resets.load(Ordering::SeqCst);
        Ticket { stripe, count: self.stripes[stripe].load(Ordering::SeqCst), resets }
    }

    /// Keeps `value`, read from Redis after `ticket` was taken, unless `key` was invalidated since (or tracking
    /// is off). Stored first and checked after: either the check sees the invalidation's count move, or the
    /// invalidation's removal comes after this store.
    pub(crate) fn keep(&self, key: &str, value: Bytes, ttl: Duration, ticket: Ticket) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        self.entries.insert(key.to_owned(), Entry { value, ttl });
        if self.stripes[ticket.stripe].load(Ordering::SeqCst) != ticket.count
            || self.resets.load(Ordering::SeqCst) != ticket.resets
            || !self.live.load(Ordering::Acquire)
        {
            self.entries.invalidate(key);
        }
    }

    /// Drops `key`: Redis said it changed.
    pub(crate) fn invalidate(&self, key: &str) {
        self.stripes[self.stripe(key)].fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key);
    }

    /// Empties the cache; `live` says whether it may be used from now on.
    pub(crate) fn reset(&self, live: bool) {
        if !live {
            self.live.store(false, Ordering::Release);
        }
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
        if live {
            self.live.store(true, Ordering::Release);
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }
}

/// Reads the tracking connection's pushes as they arrive, on the connection's own task: an `invalidate` drops
/// its keys (all of them for a flush), a lost connection empties the cache and turns it off.
pub(crate) struct Invalidations(pub(crate) Arc<NearCache>);

impl AsyncPushSender for Invalidations {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(key) => self.0.invalidate(&String::from_utf8_lossy(key)),
                            Value::SimpleString(key) => self.0.invalidate(key),
                            _ => {}
                        }
                    }
                }
                // A null list: the server flushed its keys.
                _ => self.0.reset(self.0.is_live()),
            },
            PushKind::Disconnection => self.0.reset(false),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn nothing_is_served_or_kept_while_tracking_is_off() {
        let near = NearCache::new(1 << 20);
        let ticket = near.ticket("k");
        near.keep("k", Bytes::from_static(b"v"), TTL, ticket);
        assert_eq!(near.get("k"), None);
        near.reset(true);
        let ticket = near.ticket("k");
        near.keep("k", Bytes::from_static(b"v"), TTL, ticket);
        assert_eq!(near.get("k").as_deref(), Some(&b"v"[..]));
        near.reset(false);
        assert_eq!(near.get("k"), None, "tracking lost");
        near.reset(true);
        assert_eq!(near.get("k"), None, "emptied when tracking was lost");
    }

    #[test]
    fn a_read_that_an_invalidation_overtook_is_not_kept() {
        let near = NearCache::new(1 << 20);
        near.reset(true);
        let ticket = near.ticket("k");
        // Redis answered the old value, and the key's invalidation was read before the value is kept.
        near.invalidate("k");
        near.keep("k", Bytes::from_static(b"old"), TTL, ticket);
        assert_eq!(near.get("k"), None);
        // A reset in between voids a read as well.
        let ticket = near.ticket("k");
        near.reset(true);
        near.keep("k", Bytes::from_static(b"old"), TTL, ticket);
        assert_eq!(near.get("k"), None);
    }

    #[test]
    fn invalidate_pushes_drop_their_keys_and_a_disconnection_turns_the_cache_off() {
        let near = NearCache::new(1 << 20);
        near.reset(true);
        for key in ["a", "b"] {
            let ticket = near.ticket(key);
            near.keep(key, Bytes::from_static(b"v"), TTL, ticket);
        }
        let pushes = Invalidations(near.clone());
        let invalidate = |keys: Vec<Value>| PushInfo { kind: PushKind::Invalidate, data: vec![Value::Array(keys)] };
        pushes.send(invalidate(vec![Value::BulkString(b"a".to_vec())])).unwrap();
        assert_eq!((near.get("a"), near.get("b").is_some()), (None, true));
        pushes.send(PushInfo { kind: PushKind::Disconnection, data: vec![] }).unwrap();
        assert!(!near.is_live());
        assert_eq!(near.get("b"), None);
    }

    #[test]
    fn it_holds_no_more_bytes_than_its_capacity() {
        let near = NearCache::new(64 * 1024);
        near.reset(true);
        for i in 0..1000 {
            let key = format!("k{i}");
            let ticket = near.ticket(&key);
            near.keep(&key, Bytes::from(vec![0u8; 1024]), TTL, ticket);
        }
        near.entries.run_pending_tasks();
        assert!(near.entries.weighted_size() <= 64 * 1024, "{} bytes", near.entries.weighted_size());
    }
}
