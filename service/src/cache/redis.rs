//! The shared cache backend: Redis, with the seed's keys and TTLs (`SET key value EX ttl`).
//!
//! Redis being slow or gone must never fail a request. Every command has a deadline, and a circuit breaker
//! stops asking Redis for a while after repeated failures, so requests go straight to the database instead of
//! each waiting out a timeout. After the pause one request probes Redis again; the connection manager
//! reconnects by itself when the server is back.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
// Tokio's clock, so tests can pause and advance it.
use tokio::time::Instant;

use super::{CacheBackend, CacheError};

pub(crate) struct RedisCache {
    conn: ConnectionManager,
    timeout: Duration,
    circuit: Circuit,
}

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
        Ok(Self { conn, timeout, circuit: Circuit::new(failures_to_open, open_for) })
    }

    async fn run<T>(&self, op: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>) -> Result<T, CacheError> {
        if !self.circuit.allow() {
            return Err(CacheError::Backend("circuit open: redis failed repeatedly".into()));
        }
        let result = match tokio::time::timeout(self.timeout, op(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CacheError::Backend(e.to_string())),
            Err(_) => Err(CacheError::Backend(format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        self.circuit.record(result.is_ok());
        result
    }
}

#[async_trait]
impl CacheBackend for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let value: Option<Vec<u8>> = self.run(async |mut c| c.get(key).await).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.run(async |mut c| c.set_ex::<_, _, ()>(key, value.as_ref(), ttl.as_secs()).await).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        self.run(async |mut c| c.del::<_, ()>(keys).await).await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.run(async |mut c| redis::cmd("PING").query_async::<()>(&mut c).await).await
    }
}

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

    fn record(&self, ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = match (*state, ok) {
            (_, true) => CircuitState::Closed { failures: 0 },
            (CircuitState::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                CircuitState::Closed { failures: failures + 1 }
            }
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

    #[test]
    fn a_success_resets_the_failure_count() {
        let circuit = Circuit::new(2, Duration::from_secs(5));
        circuit.record(false);
        circuit.record(true);
        circuit.record(false);
        assert!(circuit.allow());
    }
}
