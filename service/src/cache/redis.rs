//! The shared cache backend: Redis, with the performance guide's keys and TTLs (`SET key value EX ttl`).
//!
//! Redis being slow or gone must never fail a request. Every command has a deadline, and a circuit breaker
//! stops asking Redis for a while after repeated failures, so requests go straight to the database instead of
//! each waiting out a timeout. After the pause one request probes Redis again; the connection manager
//! reconnects by itself when the server is back.
//!
//! A deletion that could not reach Redis is remembered and replayed before the next command that does,
//! so an entry changed during an outage is not served stale once Redis returns.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use metrics::Gauge;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
// Tokio's clock, so tests can pause and advance it.
use tokio::time::Instant;

use super::near::{Invalidations, NearCache, Ticket};
use super::{CacheBackend, CacheError, Mark, RateDecision};

pub(crate) struct RedisCache {
    conn: ConnectionManager,
    timeout: Duration,
    circuit: Circuit,
    /// Keys whose deletion failed, oldest first; replayed before the next command.
    pending_deletes: Mutex<VecDeque<String>>,
    /// Hot entries kept in the process, kept coherent by Redis (see [`NearCache`]); `None` when turned off.
    near: Option<Near>,
}

struct Near {
    cache: Arc<NearCache>,
    /// How long an entry is kept here at most.
    ttl: Duration,
    tracker: tokio::task::JoinHandle<()>,
    /// `cache_near_hits_total`: lookups answered without asking Redis.
    hits: metrics::Counter,
}

impl Drop for Near {
    fn drop(&mut self) {
        self.tracker.abort();
    }
}

/// Remembered failed deletions beyond this are dropped (and logged): memory stays bounded in a long outage.
const MAX_PENDING_DELETES: usize = 100_000;
/// Keys per replayed `DEL`.
const REPLAY_BATCH: usize = 1000;

impl RedisCache {
    /// Sets up the connection without waiting for it: an unreachable Redis at startup only means misses.
    pub(crate) fn connect_lazy(
        url: &str,
        timeout: Duration,
        failures_to_open: u32,
        open_for: Duration,
    ) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError::Backend(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnection is retried on the next command; a request never waits through a retry series.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| CacheError::Backend(e.to_string()))?;
        Ok(Self {
            conn,
            timeout,
            circuit: Circuit::new(failures_to_open, open_for),
            pending_deletes: Mutex::new(VecDeque::new()),
            near: None,
        })
    }

    /// Keeps up to `capacity_bytes` of hot entries in the process, each for at most `ttl`, for keys under
    /// `prefixes`; a task keeps Redis tracking them and reconnects when it drops (see [`NearCache`]).
    pub(crate) fn with_near_cache(
        self,
        url: &str,
        capacity_bytes: u64,
        ttl: Duration,
        prefixes: Vec<String>,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<Self, CacheError> {
        let backend = |e: redis::RedisError| CacheError::Backend(e.to_string());
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(backend)?;
        let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(backend)?;
        let cache = NearCache::new(capacity_bytes);
        let live = metrics.gauge("cache_near_live", Vec::new());
        let tracker = tokio::spawn(track(client, prefixes, cache.clone(), self.timeout, live));
        let hits = metrics.counter("cache_near_hits_total", Vec::new());
        Ok(Self { near: Some(Near { cache, ttl, tracker, hits }), ..self })
    }

    /// The value of `key` in the near cache, counted.
    fn near_hit(&self, key: &str) -> Option<Bytes> {
        let near = self.near.as_ref()?;
        let hit = near.cache.get(key)?;
        near.hits.increment(1);
        Some(hit)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.pending_deletes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_deletes(&self, keys: &[String]) {
        let mut pending = self.pending();
        pending.extend(keys.iter().cloned());
        let excess = pending.len().saturating_sub(MAX_PENDING_DELETES);
        if excess > 0 {
            pending.drain(..excess);
            tracing::error!(
                dropped = excess,
                "too many cache deletions pending during a redis outage; some entries may be stale until their TTL"
            );
        }
    }

    /// Replays remembered deletions; a command must not run before them or it could read a stale entry.
    async fn replay_deletes(&self) -> Result<(), CacheError> {
        loop {
            let batch: Vec<String> = {
                let mut pending = self.pending();
                let n = pending.len().min(REPLAY_BATCH);
                pending.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.run(async |c| invalidate(c, &batch).await).await {
                let mut pending = self.pending();
                for key in batch.into_iter().rev() {
                    pending.push_front(key);
                }
                return Err(e);
            }
        }
    }

    /// Runs `op` after any remembered deletions.
    async fn command<T>(
        &self,
        op: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        if !self.pending().is_empty() {
            self.replay_deletes().await?;
        }
        self.run(op).await
    }

    fn forget_near(&self, keys: &[String]) {
        if let Some(near) = &self.near {
            keys.iter().for_each(|key| near.cache.invalidate(key));
        }
    }

    /// Keeps a value just read from Redis near, if the near cache is on (see [`NearCache::keep`]).
    fn keep_near(&self, key: &str, value: Option<&Bytes>, ticket: Option<Ticket>) {
        if let (Some(near), Some(value), Some(ticket)) = (&self.near, value, ticket) {
            near.cache.keep(key, value.clone(), near.ttl, ticket);
        }
    }

    async fn run<T>(&self, op: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>) -> Result<T, CacheError> {
        if !self.circuit.allow() {
            return Err(CacheError::Skipped);
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, op(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CacheError::Backend(e.to_string())),
            Err(_) if started.elapsed() >= self.timeout + self.timeout / 2 => {
                // Our own timer fired half a deadline late: this process is saturated, and the answer was most
                // likely waiting for us to read it. Opening the circuit would send every read to the database
                // and deepen the overload, so this timeout tells nothing about Redis.
                self.circuit.record_inconclusive();
                return Err(CacheError::Backend("no answer read in time: this process is saturated".into()));
            }
            Err(_) => Err(CacheError::Backend(format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        self.circuit.record(result.is_ok());
        result
    }
}

#[async_trait]
impl CacheBackend for RedisCache {
    async fn get_marked(&self, key: &str) -> Result<(Option<Bytes>, Mark), CacheError> {
        // A hit needs no mark: nothing is filled after it.
        if let Some(hit) = self.near_hit(key) {
            return Ok((Some(hit), Mark(0)));
        }
        let ticket = self.near.as_ref().map(|n| n.cache.ticket(key));
        let (value, mark): (Option<Vec<u8>>, Option<u64>) = self
            .command(async |mut c| redis::cmd("MGET").arg(key).arg(mark_key(key)).query_async(&mut c).await)
            .await?;
        let value = value.map(Bytes::from);
        self.keep_near(key, value.as_ref(), ticket);
        Ok((value, Mark(mark.unwrap_or(0))))
    }

    async fn fill(&self, key: &str, value: Bytes, ttl: Duration, mark: Mark) -> Result<(), CacheError> {
        self.command(async |mut c| {
            FILL.key(key)
                .key(mark_key(key))
                .arg(value.as_ref())
                .arg(ttl.as_secs())
                .arg(mark.0)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        // Dropped here at once as well as when Redis's push arrives, so this instance reads its own change; both
        // before the delete (reads under way keep nothing) and after it (nothing read in between stays).
        self.forget_near(keys);
        let result = self.command(async |c| invalidate(c, keys).await).await;
        self.forget_near(keys);
        if result.is_err() {
            self.remember_deletes(keys);
        }
        result
    }

    async fn incr(&self, key: &str) -> Result<u64, CacheError> {
        self.command(async |mut c| c.incr(key, 1u64).await).await
    }

    async fn counter(&self, key: &str) -> Result<u64, CacheError> {
        let value: Option<u64> = self.command(async |mut c| c.get(key).await).await?;
        Ok(value.unwrap_or(0))
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn rate_limit(&self, key: &str, interval: Duration, burst: u32) -> Result<Option<RateDecision>, CacheError> {
        let interval_us = interval.as_micros().max(1) as u64;
        let tolerance_us = interval_us * u64::from(burst.max(1) - 1);
        let (allowed, remaining, retry_us, reset_us): (u8, u32, u64, u64) = self
            .run(async |mut c| {
                redis::cmd("EVAL")
                    .arg(GCRA_SCRIPT)
                    .arg(1)
                    .arg(key)
                    .arg(interval_us)
                    .arg(tolerance_us)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(Some(RateDecision {
            allowed: allowed == 1,
            remaining,
            retry_after: Duration::from_micros(retry_us),
            reset: Duration::from_micros(reset_us),
        }))
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.run(async |mut c| redis::cmd("PING").query_async::<()>(&mut c).await).await
    }
}

/// Keeps Redis tracking the near cache's keys on a connection of its own, and the near cache on only while it
/// does: a second without an answer to PING, or a lost connection, turns it off until tracking is on again.
async fn track(client: redis::Client, prefixes: Vec<String>, near: Arc<NearCache>, timeout: Duration, live: Gauge) {
    const WATCH: Duration = Duration::from_secs(1);
    let mut pause = Duration::from_millis(100);
    loop {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout.max(WATCH)))
            .set_response_timeout(Some(WATCH))
            .set_push_sender(Invalidations(near.clone()));
        if let Ok(mut conn) = client.get_multiplexed_async_connection_with_config(&config).await {
            let mut tracking = redis::cmd("CLIENT");
            tracking.arg("TRACKING").arg("ON").arg("BCAST");
            for prefix in &prefixes {
                tracking.arg("PREFIX").arg(prefix);
            }
            match tracking.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    near.reset(true);
                    live.set(1.0);
                    tracing::info!("near cache on: redis tracks its keys");
                    pause = Duration::from_millis(100);
                    while near.is_live() && redis::cmd("PING").query_async::<()>(&mut conn).await.is_ok() {
                        tokio::time::sleep(WATCH).await;
                    }
                    tracing::warn!("near cache off: redis stopped tracking its keys");
                }
                Err(e) => tracing::warn!(error = %e, "near cache off: redis refused to track keys"),
            }
        }
        near.reset(false);
        live.set(0.0);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Where a key's mark lives: beside it, so the performance guide's keys stay as they are.
fn mark_key(key: &str) -> String {
    format!("{key}:mark")
}

/// How long a mark outlives its last invalidation: far longer than any load between reading it and filling.
const MARK_TTL_SECS: u64 = 3600;

/// Deletes `keys` and moves each one's mark on, in one atomic step.
async fn invalidate(mut c: ConnectionManager, keys: &[String]) -> redis::RedisResult<()> {
    let mut invocation = INVALIDATE.prepare_invoke();
    for key in keys {
        invocation.key(key);
    }
    for key in keys {
        invocation.key(mark_key(key));
    }
    invocation.arg(MARK_TTL_SECS).invoke_async(&mut c).await
}

/// KEYS: the keys, then their marks. ARGV[1]: the marks' TTL in seconds.
static INVALIDATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local n = #KEYS / 2
for i = 1, n do
  redis.call('INCR', KEYS[n + i])
  redis.call('EXPIRE', KEYS[n + i], ARGV[1])
end
redis.call('DEL', unpack(KEYS, 1, n))
",
    )
});

/// KEYS: the key, its mark. ARGV: the value, its TTL in seconds, the mark read before the load. Stores the value
/// only if the mark has not moved since (an absent mark is 0).
static FILL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if (tonumber(redis.call('GET', KEYS[2])) or 0) ~= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
",
    )
});

/// GCRA in one atomic step on the server, timed by the server's clock so instances need not agree on time.
/// KEYS[1]: the limit's key; ARGV: emission interval and burst tolerance, in microseconds.
/// Returns {allowed (0/1), remaining, retry-after µs, reset µs}.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now - tolerance, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = math.floor((tolerance - (new_tat - now)) / interval) + 1
if remaining < 0 then remaining = 0 end
return {1, remaining, 0, new_tat - now}
";

/// Closed: every call goes through. After `failures_to_open` failures in a row it opens for `open_for`;
/// then a single call is let through (half-open) and its outcome closes or re-opens the circuit.
struct Circuit {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<CircuitState>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CircuitState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

impl Circuit {
    fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            state: Mutex::new(CircuitState::Closed { failures: 0 }),
        }
    }

    fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            CircuitState::Closed { .. } => true,
            CircuitState::Open { until } if Instant::now() >= until => {
                *state = CircuitState::HalfOpen;
                true
            }
            CircuitState::Open { .. } | CircuitState::HalfOpen => false,
        }
    }

    /// A call that tells nothing about Redis: a probe that ends so lets another probe try after the pause.
    fn record_inconclusive(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == CircuitState::HalfOpen {
            *state = CircuitState::Open { until: Instant::now() + self.open_for };
        }
    }

    fn record(&self, ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = match (*state, ok) {
            (CircuitState::HalfOpen, true) => {
                tracing::info!("redis answers again");
                CircuitState::Closed { failures: 0 }
            }
            (_, true) => CircuitState::Closed { failures: 0 },
            (CircuitState::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                CircuitState::Closed { failures: failures + 1 }
            }
            // Calls that were already under way when the circuit opened do not re-open it.
            (open @ CircuitState::Open { .. }, false) => open,
            (_, false) => {
                tracing::warn!(
                    pause_ms = self.open_for.as_millis() as u64,
                    "redis keeps failing: not asking it for a while"
                );
                CircuitState::Open { until: Instant::now() + self.open_for }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_circuit_opens_after_repeated_failures_and_probes_once_after_the_pause() {
        let circuit = Circuit::new(3, Duration::from_secs(5));
        for _ in 0..3 {
            assert!(circuit.allow());
            circuit.record(false);
        }
        assert!(!circuit.allow(), "open after 3 failures");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(circuit.allow(), "one probe after the pause");
        assert!(!circuit.allow(), "only one probe at a time");
        circuit.record(true);
        assert!(circuit.allow(), "closed again after a success");
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_noticed_late_by_a_saturated_process_do_not_open_the_circuit() {
        let deadline = Duration::from_millis(100);
        let cache = RedisCache::connect_lazy("redis://127.0.0.1:1", deadline, 2, Duration::from_secs(60)).unwrap();
        let never = async || std::future::pending::<redis::RedisResult<()>>().await;
        for _ in 0..5 {
            // The clock moves on while the command is being polled, as it does for a process whose tasks wait
            // long for a core: the timeout is noticed two deadlines after the command was sent.
            let starved = async |_| {
                tokio::time::advance(deadline * 2).await;
                never().await
            };
            assert!(cache.run(starved).await.is_err());
        }
        assert!(cache.circuit.allow(), "late timeouts opened the circuit");
        for _ in 0..2 {
            assert!(cache.run(async |_| never().await).await.is_err());
        }
        assert!(!cache.circuit.allow(), "timeouts noticed on time must still open it");
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let circuit = Circuit::new(2, Duration::from_secs(5));
        circuit.record(false);
        circuit.record(true);
        circuit.record(false);
        assert!(circuit.allow());
    }
}
