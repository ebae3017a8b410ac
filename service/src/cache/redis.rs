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
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
// Tokio's clock, so tests can pause and advance it.
use tokio::time::Instant;

use super::{CacheBackend, CacheError, RateDecision};

pub(crate) struct RedisCache {
    conn: ConnectionManager,
    timeout: Duration,
    circuit: Circuit,
    /// Keys whose deletion failed, oldest first; replayed before the next command.
    pending_deletes: Mutex<VecDeque<String>>,
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
        })
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
            if let Err(e) = self.run(async |mut c| c.del::<_, ()>(&batch).await).await {
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
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let value: Option<Vec<u8>> = self.command(async |mut c| c.get(key).await).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.command(async |mut c| c.set_ex::<_, _, ()>(key, value.as_ref(), ttl.as_secs()).await).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        let result = self.command(async |mut c| c.del::<_, ()>(keys).await).await;
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
