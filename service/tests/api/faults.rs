//! Faults on real servers: Redis unreachable or stopped mid-test, Postgres unreachable at startup.

use std::process::{Child, Command, Stdio};

use filewallball::Application;
use secrecy::SecretString;
use serde_json::Value;

use crate::backends::{Backend, postgres_redis_or_skip};
use crate::helpers::{TestApp, error_code, eventually, free_port, metric, pattern, spawn_configured, test_config};

/// Upload, read metadata twice and download: every step must succeed.
async fn exercise(app: &TestApp) -> String {
    let meta = app.upload(&app.admin_key, "f.bin", pattern(2000, 1)).await;
    let id = meta["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let res = app.get(&app.admin_key, &format!("/api/v1/files/{id}")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = app.download(&app.admin_key, &id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), pattern(2000, 1));
    id
}

#[tokio::test]
async fn requests_succeed_when_redis_is_unreachable() {
    let Some(backend) = postgres_redis_or_skip("faults::requests_succeed_when_redis_is_unreachable").await else {
        return;
    };
    let (mut config, dir, db) = test_config(&backend).await;
    // Nothing listens on port 1.
    config.cache.redis_url = SecretString::from("redis://127.0.0.1:1");
    let app = spawn_configured(config, dir, db).await;
    exercise(&app).await;
    let metrics = app.metrics().await;
    assert!(metric(&metrics, "cache_errors_total ") > 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "cache_hits_total{cache_type=\"file_meta\"} "), 0.0);
    let ready: Value = app.client.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
}

/// A private Redis this test may stop and start.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { port, child: Some(child) })
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn requests_succeed_while_redis_is_stopped_and_the_cache_returns_with_it() {
    let test = "faults::requests_succeed_while_redis_is_stopped_and_the_cache_returns_with_it";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let port = free_port();
    let Some(mut redis) = OwnRedis::start(port) else {
        if std::env::var("FWB_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
            panic!("{test}: redis-server is not installed");
        }
        crate::backends::skip_notice(&format!("skipped {test}: redis-server is not installed"));
        return;
    };
    let (mut config, dir, db) = test_config(&backend).await;
    config.cache.redis_url = SecretString::from(format!("redis://127.0.0.1:{port}"));
    config.cache.circuit_open_secs = 1;
    let app = spawn_configured(config, dir, db).await;
    let hits = async || metric(&app.metrics().await, "cache_hits_total{cache_type=\"file_meta\"} ");
    let id = {
        let ping = || std::net::TcpStream::connect(("127.0.0.1", redis.port)).is_ok();
        eventually(10, "own redis listening", async || ping()).await;
        exercise(&app).await
    };
    assert!(hits().await >= 1.0, "the second metadata read was a cache hit");

    redis.stop();
    let before = hits().await;
    exercise(&app).await;
    assert_eq!(hits().await, before, "no hits while Redis is down");
    assert!(metric(&app.metrics().await, "cache_errors_total ") > 0.0);

    let mut redis = OwnRedis::start(port).expect("redis-server starts again");
    let meta_path = format!("/api/v1/files/{id}");
    eventually(20, "cache hits after Redis returns", async || {
        for _ in 0..2 {
            let res = app.get(&app.admin_key, &meta_path).send().await.unwrap();
            assert_eq!(res.status(), 200);
        }
        hits().await > before
    })
    .await;
    redis.stop();
}

/// A TCP forwarder to a real server that a test can cut (closing every connection) and restore,
/// so it decides when that server is reachable.
struct Proxy {
    port: u16,
    target: (String, u16),
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(port: u16, target: (String, u16)) -> Self {
        let mut proxy = Self { port, target, task: None };
        proxy.restore().await;
        proxy
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set, so aborting the task closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

#[tokio::test]
async fn a_change_made_while_redis_is_unreachable_is_not_served_stale_when_it_returns() {
    let test = "faults::a_change_made_while_redis_is_unreachable_is_not_served_stale_when_it_returns";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let Backend::PostgresRedis(services) = &backend else { unreachable!() };
    let redis_target = {
        let url = services.redis_url.trim_start_matches("redis://");
        let (host, port) = url.trim_end_matches('/').rsplit_once(':').unwrap();
        (host.to_owned(), port.parse::<u16>().unwrap())
    };
    let port = free_port();
    let mut proxy = Proxy::start(port, redis_target).await;
    let (mut config, dir, db) = test_config(&backend).await;
    config.cache.redis_url = SecretString::from(format!("redis://127.0.0.1:{port}"));
    config.cache.circuit_open_secs = 1;
    let app = spawn_configured(config, dir, db).await;
    let meta = app.upload(&app.admin_key, "before.txt", b"x".to_vec()).await;
    let path = format!("/api/v1/files/{}", meta["id"].as_str().unwrap());
    let name = async || {
        let res = app.get(&app.admin_key, &path).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["name"].as_str().unwrap().to_owned()
    };
    assert_eq!(name().await, "before.txt");
    assert_eq!(name().await, "before.txt"); // now cached in Redis

    proxy.cut().await;
    let res = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&app.admin_key)
        .json(&serde_json::json!({"name": "after.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a change succeeds while the cache is unreachable");
    assert_eq!(name().await, "after.txt");

    proxy.restore().await;
    // Wait until the service reaches Redis again (readiness pings it) without touching the file's key,
    // so the next read is the first command on that key since the outage.
    eventually(20, "redis reachable again", async || {
        let ready: Value = app.client.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
        ready["status"] == "ok"
    })
    .await;
    let hits = async || metric(&app.metrics().await, "cache_hits_total{cache_type=\"file_meta\"} ");
    let before = hits().await;
    assert_eq!(name().await, "after.txt", "the entry cached before the change is not served");
    assert_eq!(name().await, "after.txt");
    assert_eq!(hits().await, before + 1.0, "the cache is in use again");
}

#[tokio::test]
async fn the_service_starts_without_postgres_and_is_ready_once_it_connects() {
    let test = "faults::the_service_starts_without_postgres_and_is_ready_once_it_connects";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let Backend::PostgresRedis(services) = &backend else { unreachable!() };
    let (mut config, dir, db) = test_config(&backend).await;
    let db_name = db.as_ref().unwrap().url.rsplit('/').next().unwrap().to_owned();
    // Point the service at a port where nothing listens yet.
    let port = free_port();
    config.database.url = SecretString::from(crate::backends::with_database(
        &format!("postgres://postgres@127.0.0.1:{port}/x"),
        &db_name,
    ));
    config.database.pool_timeout_secs = 1;
    let app = Application::build(config).await.expect("the service starts without its database");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    // Well formed, so it is looked up (a malformed key is refused without the database).
    const UNKNOWN_KEY: &str = "fwb_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    let res = client.get(format!("{address}/health/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let res = client.get(format!("{address}/api/v1/users/me")).bearer_auth(UNKNOWN_KEY).send().await.unwrap();
    assert_eq!(res.status(), 503, "an API call without a database is a clear 503, not a hang or a 500");
    assert_eq!(error_code(res).await, "database-unavailable");

    // Postgres "comes up".
    let _proxy = Proxy::start(port, services.postgres_addr()).await;
    eventually(30, "ready after postgres is reachable", async || {
        client.get(format!("{address}/health/ready")).send().await.unwrap().status() == 200
    })
    .await;
    let res = client.get(format!("{address}/api/v1/users/me")).bearer_auth(UNKNOWN_KEY).send().await.unwrap();
    assert_eq!(res.status(), 401, "the key is now checked against the migrated database");
    drop(dir);
    drop(db);
}
