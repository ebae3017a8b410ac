//! Building the application from its configuration, and running it until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::{KeyCache, NewKey};
use crate::blob::BlobLocks;
use crate::blob::local::LocalStore;
use crate::cache::memory::MemoryCache;
use crate::cache::redis::RedisCache;
use crate::cache::{Cache, CacheBackend, Family};
use crate::config::Config;
use crate::db::{self, MetaStore, NewUser};
use crate::domain::Role;
use crate::http;
use crate::media::thumbnail::Thumbnailer;
use crate::share_token::ShareKey;
use crate::state::{AppContext, AppState};
use crate::telemetry::Metrics;

/// A bound, ready-to-serve instance of the service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// A user created with their first key; the key is shown only here.
#[derive(Debug)]
pub struct CreatedUser {
    pub id: uuid::Uuid,
    pub name: String,
    pub key: String,
}

async fn open_context(config: Config) -> anyhow::Result<AppContext> {
    let db = connect_database(&config).await?;
    let blobs = LocalStore::open(config.blob_dir()).await.context("opening the blob directory")?;
    let metrics = Metrics::new();
    metrics.spawn_upkeep();
    let cache_config = &config.cache;
    let backend: Arc<dyn CacheBackend> = if cache_config.redis_url.expose_secret().is_empty() {
        Arc::new(MemoryCache::new(cache_config.memory_capacity_bytes))
    } else {
        let url = cache_config.redis_url.expose_secret();
        let mut redis = RedisCache::connect_lazy(
            url,
            Duration::from_millis(cache_config.timeout_ms),
            cache_config.circuit_failures,
            Duration::from_secs(cache_config.circuit_open_secs),
        )
        .context("configuring the redis cache")?;
        if cache_config.near_capacity_bytes > 0 {
            let prefixes = Family::ALL.map(|f| format!("{}:{}:", cache_config.namespace, f.key_prefix())).to_vec();
            redis = redis
                .with_near_cache(
                    url,
                    cache_config.near_capacity_bytes,
                    Duration::from_secs(cache_config.near_ttl_secs),
                    prefixes,
                    &metrics,
                )
                .context("configuring the near cache")?;
        }
        Arc::new(redis)
    };
    let cache = Cache::new(backend, &cache_config.namespace, &metrics).with_fill_delay(cache_config.fill_delay);
    let keys = KeyCache::new(&cache, &metrics, config.rate_limit.refusals_per_minute);
    keys.spawn_poller(cache.clone());
    let audit = AuditLog::start(db.clone());
    let blobs: Arc<dyn crate::blob::BlobStore> = Arc::new(blobs);
    let thumbnails = Thumbnailer::start(
        &config.thumbnail,
        config.storage.data_dir.join("thumbnails"),
        db.clone(),
        blobs.clone(),
        cache.clone(),
    )
    .await
    .context("starting the thumbnail workers")?;
    let share_key = ShareKey::new(config.share.secret.expose_secret());
    let limits = crate::ratelimit::Limits::new(&config.rate_limit);
    Ok(AppContext {
        db,
        keys,
        audit,
        share_key,
        limits,
        blobs,
        thumbnails,
        cache,
        metrics,
        blob_locks: BlobLocks::new(),
        config,
    })
}

impl Application {
    /// Opens the backends (running migrations, clearing stale temporary files) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let bind = config.server.bind;
        let state = AppState(Arc::new(open_context(config).await?));
        // Rate-limit state of keys back to a full allowance is dropped now and then.
        let weak = Arc::downgrade(&state.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(ctx) = weak.upgrade() else { return };
                ctx.limits.forget_idle();
            }
        });
        crate::maintenance::spawn(Arc::downgrade(&state.0));
        let listener = TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
        Ok(Self { listener, state })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The router, for driving the service in-process (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    /// Creates a user and their first API key, as `filewallball admin create-user` does.
    pub async fn create_user(&self, name: &str, role: &str) -> anyhow::Result<CreatedUser> {
        create_user(self.state.db.as_ref(), name, role).await
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for at most
    /// `server.shutdown_timeout_secs`, and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let grace = self.state.config.shutdown_timeout();
        let app = http::router(self.state.clone());
        crate::serve::serve(self.listener, app, &self.state.config.server, &self.state.metrics, shutdown, grace).await;
        // Requests have stopped recording events: write what is still queued before the process goes.
        if !self.state.audit.flush(AUDIT_FLUSH).await {
            tracing::error!("audit events still queued at exit could not be written in time");
        }
        Ok(())
    }
}

/// How long shutdown waits for queued audit events to reach the database.
const AUDIT_FLUSH: Duration = Duration::from_secs(10);

/// How long administrative commands wait for a database that is still starting.
const DATABASE_WAIT: Duration = Duration::from_secs(30);

/// Waits until the database answers (a PostgreSQL store connects and migrates in the background).
async fn wait_for_database(db: &dyn MetaStore) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DATABASE_WAIT;
    loop {
        match db.ping().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).context("the database did not become ready within 30 s");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn create_user(db: &dyn MetaStore, name: &str, role: &str) -> anyhow::Result<CreatedUser> {
    wait_for_database(db).await?;
    let role = Role::parse(role).with_context(|| format!("role must be admin or user, not {role:?}"))?;
    crate::domain::names::validate_user_name(name).map_err(anyhow::Error::msg)?;
    let user = db
        .create_user(&NewUser { name: name.to_owned(), role, quota_bytes: None })
        .await
        .with_context(|| format!("creating user {name:?}"))?;
    let key = NewKey::generate();
    db.create_api_key(user.id, &key.hash, &key.prefix).await.context("issuing the key")?;
    Ok(CreatedUser { id: user.id, name: user.name, key: key.secret })
}

/// The configured database, connecting in the background for PostgreSQL. The embedded database lives in the
/// data directory, which a first start or a first command may find missing.
async fn connect_database(config: &Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    tokio::fs::create_dir_all(&config.storage.data_dir)
        .await
        .with_context(|| format!("creating data directory {}", config.storage.data_dir.display()))?;
    db::connect(&config.database_url(), &config.pool_settings()).await.context("opening the metadata database")
}

/// Opens the configured database and nothing else, once it answers: what an administrative command beside a
/// running service needs, with no blob sweep, no workers and no pollers of its own.
async fn open_database(config: &Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    let db = connect_database(config).await?;
    wait_for_database(db.as_ref()).await?;
    Ok(db)
}

/// `filewallball admin create-user`: opens the configured database and creates a user with a key.
pub async fn admin_create_user(config: Config, name: &str, role: &str) -> anyhow::Result<CreatedUser> {
    let db = open_database(&config).await?;
    create_user(db.as_ref(), name, role).await
}

/// What `filewallball admin fsck` found (and, with `--repair`, mended).
#[derive(Debug)]
pub struct FsckReport {
    /// Lines for the operator, one finding each.
    pub lines: Vec<String>,
    /// Problems left after any repair: the command's exit status is non-zero when there are some.
    pub unresolved: usize,
}

/// `filewallball admin fsck`: compares the blob store with the database. Reports blobs no row refers to
/// (older than `grace`), temporary files left by a crash, rows whose bytes are missing or of the wrong size,
/// and reference counts that disagree with the files; `repair` removes the first two and recounts the last.
/// Safe beside a running service: it only removes what is older than `grace`.
pub async fn admin_fsck(config: Config, repair: bool, grace: Duration) -> anyhow::Result<FsckReport> {
    use crate::maintenance::RowProblem;
    let db = open_database(&config).await?;
    let blobs = LocalStore::open(config.blob_dir()).await.context("opening the blob directory")?;
    let sweep = crate::maintenance::sweep(db.as_ref(), &blobs, None, grace, repair).await?;
    let (rows, problems) = crate::maintenance::check_rows(db.as_ref(), &blobs, repair).await?;
    let done = if repair { "removed" } else { "found" };
    let mut lines = vec![
        format!("blobs stored: {} ({} bytes); blob rows: {rows}", sweep.blobs, sweep.bytes),
        format!(
            "blobs no row refers to (older than {} s): {} ({} bytes) {done}",
            grace.as_secs(),
            sweep.orphans,
            sweep.orphan_bytes
        ),
    ];
    if repair {
        lines.push(format!(
            "temporary files idle for {} s or more: {} removed",
            grace.as_secs(),
            sweep.stale_temp_files
        ));
    }
    let mut unresolved = if repair { 0 } else { sweep.orphans as usize };
    for problem in &problems {
        lines.push(match problem {
            RowProblem::Missing { content_hash, files } => {
                unresolved += 1;
                format!("missing bytes: blob {content_hash}, referred to by {files} file(s)")
            }
            RowProblem::WrongSize { content_hash, recorded, stored } => {
                unresolved += 1;
                format!("wrong size: blob {content_hash} is recorded as {recorded} bytes, {stored} are stored")
            }
            RowProblem::WrongCount { content_hash, recorded, files } => {
                unresolved += usize::from(!repair);
                let fixed = if repair { " (recounted)" } else { "" };
                format!(
                    "wrong reference count: blob {content_hash} counts {recorded}, {files} file(s) refer to it{fixed}"
                )
            }
        });
    }
    lines.push(if unresolved == 0 { "clean".to_owned() } else { format!("{unresolved} problem(s) left") });
    Ok(FsckReport { lines, unresolved })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
