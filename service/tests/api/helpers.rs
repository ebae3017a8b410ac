//! Spawning the service for a test: its own data directory, port, admin key and — on the Postgres+Redis
//! backend — its own database (created and dropped) and Redis key prefix, so tests run in parallel.

use std::path::{Path, PathBuf};

use filewallball::{Application, Config};
use reqwest::{Client, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::Value;

pub(crate) use crate::backends::Backend;

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) admin_key: String,
    pub(crate) client: Client,
    pub(crate) data_dir: tempfile::TempDir,
    /// What the instance was started with (a sibling instance starts from it).
    pub(crate) config: Config,
    database: Option<crate::backends::TestDatabase>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the service with default configuration on a free port and a fresh data directory.
pub(crate) async fn spawn_app(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// A configuration for `backend` with a fresh data directory (and database); the guard drops the database.
pub(crate) async fn test_config(
    backend: &Backend,
) -> (Config, tempfile::TempDir, Option<crate::backends::TestDatabase>) {
    if std::env::var_os("TEST_LOG").is_some() {
        filewallball::telemetry::init_tracing(&Config::default().log, None);
    }
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.server.shutdown_timeout_secs = 5;
    config.storage.data_dir = data_dir.path().to_owned();
    let database = match backend {
        Backend::Embedded => None,
        Backend::PostgresRedis(services) => {
            let database = services.create_database().await;
            config.database.url = SecretString::from(database.url.clone());
            // Tests run side by side on one server: keep each pool small.
            config.database.pool_size = 3;
            config.database.max_overflow = 2;
            config.cache.redis_url = SecretString::from(services.redis_url.clone());
            config.cache.namespace = format!("fwbtest-{}", uuid::Uuid::now_v7().simple());
            Some(database)
        }
    };
    (config, data_dir, database)
}

/// Like [`spawn_app`], with the configuration adjusted first.
pub(crate) async fn spawn_app_with(backend: &Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let (mut config, data_dir, database) = test_config(backend).await;
    adjust(&mut config);
    spawn_configured(config, data_dir, database).await
}

/// Starts the service with exactly this configuration and creates its admin.
pub(crate) async fn spawn_configured(
    config: Config,
    data_dir: tempfile::TempDir,
    database: Option<crate::backends::TestDatabase>,
) -> TestApp {
    let app = Application::build(config.clone()).await.expect("the application builds");
    let admin = app.create_user("admin", "admin").await.expect("admin created");
    serve(app, config, admin.key, data_dir, database)
}

/// A second instance beside `first`: same database and cache, its own port and data directory.
pub(crate) async fn spawn_sibling(first: &TestApp) -> TestApp {
    spawn_sibling_with(first, |_| {}).await
}

/// Like [`spawn_sibling`], with the configuration adjusted first.
pub(crate) async fn spawn_sibling_with(first: &TestApp, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = first.config.clone();
    config.storage.data_dir = data_dir.path().to_owned();
    adjust(&mut config);
    let app = Application::build(config.clone()).await.expect("the application builds");
    let app = serve(app, config, first.admin_key.clone(), data_dir, None);
    wait_ready(&app).await;
    app
}

/// Waits until the instance is ready (a PostgreSQL store connects and migrates in the background).
async fn wait_ready(app: &TestApp) {
    for _ in 0..300 {
        if app.client.get(app.url("/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the instance is not ready after 15 s");
}

fn serve(
    app: Application,
    config: Config,
    admin_key: String,
    data_dir: tempfile::TempDir,
    database: Option<crate::backends::TestDatabase>,
) -> TestApp {
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp { address, admin_key, client: Client::new(), data_dir, config, database, stop, server }
}

/// What is left of an instance after [`TestApp::shut_down`]: its database, to look into.
pub(crate) struct StoppedApp {
    pub(crate) config: Config,
    admin_key: String,
    data_dir: tempfile::TempDir,
    database: Option<crate::backends::TestDatabase>,
}

impl StoppedApp {
    /// Starts the instance again on the same data, with the configuration adjusted first.
    pub(crate) async fn restart(self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = self.config;
        adjust(&mut config);
        let app = Application::build(config.clone()).await.expect("the application builds again");
        let app = serve(app, config, self.admin_key, self.data_dir, self.database);
        wait_ready(&app).await;
        app
    }

    /// Runs a query returning one count against the instance's database, whichever backend it is.
    pub(crate) async fn count(&self, sql: &'static str) -> i64 {
        count(&self.config, sql).await
    }
}

/// Runs a query returning one count against the database of an instance configured so.
pub(crate) async fn count(config: &Config, sql: &'static str) -> i64 {
    use secrecy::ExposeSecret as _;
    use sqlx::Connection as _;
    let url = config.database.url.expose_secret().to_owned();
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let path = config.storage.data_dir.join("filewallball.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// Runs a statement against the database of an instance configured so (a running one included), with the
/// text `$1` bound to `arg`; the placeholder is written `?` for SQLite.
pub(crate) async fn execute(config: &Config, sql: &str, arg: &str) {
    use secrecy::ExposeSecret as _;
    use sqlx::Connection as _;
    let url = config.database.url.expose_secret().to_owned();
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(arg).execute(&mut conn).await.unwrap();
    } else {
        let path = config.storage.data_dir.join("filewallball.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let sql = sql.replace("$1", "?");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(arg).execute(&mut conn).await.unwrap();
    }
}

/// A user created through the API, with their key.
pub(crate) struct TestUser {
    pub(crate) id: String,
    pub(crate) key: String,
}

impl TestApp {
    /// Shuts the instance down as SIGTERM would and waits until it has finished; the data stays.
    pub(crate) async fn shut_down(self) -> StoppedApp {
        let _ = self.stop.send(());
        self.server.await.expect("the server task").expect("a clean shutdown");
        StoppedApp { config: self.config, admin_key: self.admin_key, data_dir: self.data_dir, database: self.database }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub(crate) fn get(&self, key: &str, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    pub(crate) fn post(&self, key: &str, path: &str) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(key)
    }

    pub(crate) async fn create_user(&self, name: &str) -> TestUser {
        let user: Value = self
            .post(&self.admin_key, "/api/v1/users")
            .json(&serde_json::json!({"name": name}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = user["id"].as_str().unwrap().to_owned();
        let key: Value = self
            .post(&self.admin_key, &format!("/api/v1/users/{id}/keys"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        TestUser { id, key: key["secret"].as_str().unwrap().to_owned() }
    }

    /// Uploads `bytes` as a raw body named `name`; panics unless it is a 201.
    pub(crate) async fn upload(&self, key: &str, name: &str, bytes: Vec<u8>) -> Value {
        let res = self.upload_raw(key, name, bytes).await;
        assert_eq!(res.status(), 201, "upload of {name}");
        res.json().await.unwrap()
    }

    pub(crate) async fn upload_raw(&self, key: &str, name: &str, bytes: Vec<u8>) -> Response {
        self.post(key, "/api/v1/files").query(&[("name", name)]).body(bytes).send().await.unwrap()
    }

    pub(crate) async fn download(&self, key: &str, id: &str) -> Response {
        self.get(key, &format!("/api/v1/files/{id}/content")).send().await.unwrap()
    }

    pub(crate) async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.data_dir.path().join("blobs")
    }

    /// Stored blobs (files under the blob directory, temporary ones excluded).
    pub(crate) fn stored_blobs(&self) -> usize {
        files_under(&self.blob_dir()).into_iter().filter(|p| !is_temp(p)).count()
    }

    /// Temporary upload files in the blob directory.
    pub(crate) fn temp_files(&self) -> usize {
        files_under(&self.blob_dir()).into_iter().filter(|p| is_temp(p)).count()
    }

    /// Every file row of `key`'s owner, live or deleted.
    pub(crate) async fn count_files(&self, key: &str) -> usize {
        let mut n = 0;
        for deleted in ["false", "true"] {
            let page: Value = self
                .get(key, "/api/v1/files")
                .query(&[("deleted", deleted), ("limit", "1000")])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            n += page["items"].as_array().unwrap().len();
        }
        n
    }
}

fn is_temp(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// Deterministic pseudo-random bytes, so a test can regenerate what it sent.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The error code of a JSON error response.
pub(crate) async fn error_code(res: Response) -> String {
    let body: Value = res.json().await.expect("errors are JSON");
    assert!(body["error"]["request_id"].as_str().is_some_and(|s| !s.is_empty()), "request_id in {body}");
    assert!(body["error"]["message"].is_string(), "message in {body}");
    body["error"]["code"].as_str().expect("a code").to_owned()
}

/// Polls `check` every 100 ms until it holds (the server reaches some states asynchronously);
/// fails after `secs`.
pub(crate) async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not reached within {secs} s");
}

/// The value of the Prometheus sample whose line starts with `line_start` (name and labels), 0 if absent.
pub(crate) fn metric(text: &str, line_start: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(line_start)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
