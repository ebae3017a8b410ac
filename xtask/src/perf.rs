//! `cargo xtask perf`: start a service on a fresh data store, run a load scenario against it, judge the run.
//!
//! The service, its data and any database or containers made for the run are removed on every way out:
//! success, failure, or Ctrl-C (which also reaches the service and the load generator, who stop on their own).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fwb_reports::Summary;
use fwb_reports::verdict::{self, Verdict};
use xshell::{Shell, cmd};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Run a load scenario against a fresh service and judge it against the scenario's targets.
#[derive(clap::Args)]
pub(crate) struct Perf {
    /// The scenario file.
    #[arg(long, default_value = "scenarios/peak.toml")]
    scenario: PathBuf,
    /// Where the service keeps its data: `auto` picks external (FWB_DATABASE_URL and FWB_REDIS_URL set),
    /// else containers (a Docker daemon answers), else embedded (SQLite and an in-process cache).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// A summary.json of an earlier run: regressions beyond the scenario's tolerance fail too.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The run folder; default `reports/runs/<UTC time>-<scenario>-<git short sha>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the release binaries as they are.
    #[arg(long)]
    no_build: bool,
    /// Take no CPU profile (to measure what the profiler costs the run).
    #[arg(long)]
    no_profile: bool,
    /// Instead of a load run: count the instructions of the hot request paths under callgrind and compare them
    /// with `--baseline` (default `reports/baselines/instructions.json`).
    #[arg(long)]
    instructions: bool,
    /// With `--instructions`: write the counts into the baseline file instead of comparing.
    #[arg(long, requires = "instructions")]
    write_baseline: bool,
    /// With `--instructions`: rounds of counting; each path's median is compared.
    #[arg(long, requires = "instructions", default_value_t = 3)]
    rounds: usize,
    /// With `--instructions`: count only this path (`metadata_get`, …) and compare only it; with
    /// `--write-baseline`, only its count is replaced.
    #[arg(long = "path", requires = "instructions", value_name = "NAME")]
    only_path: Option<String>,
    /// Instead of one run: step the scenario's rate up (×1.5, then two refinements between the highest rate
    /// held and the lowest failed) against one service on one data set, each step judged on the scenario's
    /// targets, and report the highest rate held; `--baseline` is then a capacity.json.
    #[arg(long, conflicts_with = "instructions")]
    find_capacity: bool,
    /// With `--find-capacity`: the most steps a search takes.
    #[arg(long, requires = "find_capacity", default_value_t = 16)]
    max_steps: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendChoice {
    Auto,
    Embedded,
    External,
    Containers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    Embedded,
    External { database_url: String, redis_url: String },
    Containers,
}

impl Backend {
    fn label(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::External { .. } => "external",
            Backend::Containers => "containers",
        }
    }
}

/// Which backend a run uses, and why, from the request, the environment and whether Docker answers.
pub(crate) fn choose_backend(
    requested: BackendChoice,
    env: impl Fn(&str) -> Option<String>,
    docker_answers: impl FnOnce() -> bool,
) -> anyhow::Result<(Backend, String)> {
    let external = match (env("FWB_DATABASE_URL"), env("FWB_REDIS_URL")) {
        (Some(database_url), Some(redis_url)) => Some(Backend::External { database_url, redis_url }),
        (None, None) => None,
        (Some(_), None) => bail!("FWB_DATABASE_URL is set but FWB_REDIS_URL is not: set both for an external backend"),
        (None, Some(_)) => bail!("FWB_REDIS_URL is set but FWB_DATABASE_URL is not: set both for an external backend"),
    };
    match requested {
        BackendChoice::Embedded => Ok((Backend::Embedded, "asked for".into())),
        BackendChoice::External => match external {
            Some(b) => Ok((b, "asked for; FWB_DATABASE_URL and FWB_REDIS_URL are set".into())),
            None => bail!("--backend external needs FWB_DATABASE_URL and FWB_REDIS_URL"),
        },
        BackendChoice::Containers => {
            if docker_answers() {
                Ok((Backend::Containers, "asked for; a Docker daemon answers".into()))
            } else {
                bail!("--backend containers needs a Docker daemon, and `docker info` does not answer")
            }
        }
        BackendChoice::Auto => match external {
            Some(b) => Ok((b, "FWB_DATABASE_URL and FWB_REDIS_URL are set".into())),
            None if docker_answers() => Ok((Backend::Containers, "a Docker daemon answers".into())),
            None => {
                Ok((Backend::Embedded, "FWB_DATABASE_URL/FWB_REDIS_URL are unset and no Docker daemon answers".into()))
            }
        },
    }
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything a run made, undone on drop.
#[derive(Default)]
struct Cleanup {
    service: Option<Child>,
    temp_dir: Option<PathBuf>,
    /// (a URL of the server's maintenance database, the database to drop)
    database: Option<(String, String)>,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.service.take() {
            stop(&mut child, Duration::from_secs(15));
        }
        if let Some((url, name)) = self.database.take() {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = Command::new("psql").args(["-q", &url, "-c", &sql]).stdout(Stdio::null()).status();
        }
        for id in self.containers.drain(..) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// SIGTERM (the service drains and exits), then SIGKILL after `grace`.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `postgres://u@h:p/db?x` with another database name.
pub(crate) fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("a database URL looks like postgres://user@host:port/db")?;
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| crate::project_root().join("target"), PathBuf::from)
}

/// A service started for a run, with what it needs removed on drop.
struct Started {
    cleanup: Cleanup,
    backend: Backend,
    bin: PathBuf,
    base: String,
    pid: u32,
    admin_key: String,
}

impl Perf {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.instructions {
            let baseline = self.baseline.unwrap_or_else(|| PathBuf::from(crate::instructions::BASELINE));
            let out = match self.out {
                Some(dir) => {
                    sh.create_dir(&dir)?;
                    dir
                }
                None => crate::run_dir(sh, "instructions")?,
            };
            return crate::instructions::run(
                sh,
                &out,
                &baseline,
                self.write_baseline,
                self.rounds,
                self.only_path.as_deref(),
            );
        }
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
        let scenario_name = scenario_name_of(&self.scenario)?;
        let out = match &self.out {
            Some(dir) => {
                sh.create_dir(dir)?;
                dir.clone()
            }
            None => crate::run_dir(sh, &scenario_name)?,
        };
        let mut started = self.start_service(sh, &out)?;
        if self.find_capacity {
            return self.find_capacity(sh, &mut started, &out, &scenario_name);
        }
        self.load(&started, &out, &[])?;
        if let Some(mut service) = started.cleanup.service.take() {
            stop(&mut service, Duration::from_secs(15));
        }
        let summary = Summary::read(&out.join("summary.json")).map_err(anyhow::Error::msg)?;
        let baseline = match &self.baseline {
            Some(path) => Some((Summary::read(path).map_err(anyhow::Error::msg)?, path.as_path())),
            None => None,
        };
        write_verdict(&out, &summary, baseline.as_ref().map(|(b, p)| (b, *p)))
    }

    /// Builds the release binaries (unless `--no-build`), prepares the backend's data store and starts the
    /// service on a free port, its log in `out/service.log`.
    fn start_service(&self, sh: &Shell, out: &Path) -> anyhow::Result<Started> {
        let (backend, why) =
            choose_backend(self.backend, |k| std::env::var(k).ok().filter(|v| !v.is_empty()), docker_answers)?;
        eprintln!("perf: backend {} ({why})", backend.label());
        if !self.no_build {
            crate::cargo(sh, &["build", "--release", "-p", "filewallball", "-p", "fwb-loadtest"]).run()?;
        }
        let bin = target_dir().join("release");
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
        let mut cleanup = Cleanup::default();
        let temp = std::env::temp_dir().join(format!("fwb-perf-{stamp}-{}", std::process::id()));
        std::fs::create_dir_all(&temp)?;
        cleanup.temp_dir = Some(temp.clone());

        let port = free_port()?;
        let mut env: Vec<(String, String)> = vec![
            ("FWB__STORAGE__DATA_DIR".into(), temp.join("data").display().to_string()),
            ("FWB__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
        ];
        if self.find_capacity {
            // Rate limits are policy, not capacity: a search measures what the service holds without them.
            for limit in ["API", "DOWNLOAD", "UPLOAD"] {
                env.push((format!("FWB__RATE_LIMIT__{limit}_PER_MINUTE"), "0".into()));
            }
        }
        match &backend {
            Backend::Embedded => {}
            Backend::External { database_url, redis_url } => {
                // A fresh database on the caller's server, never the caller's data; a fresh cache namespace.
                let name = format!("fwb_perf_{stamp}_{}", std::process::id());
                let create = format!("CREATE DATABASE \"{name}\"");
                cmd!(sh, "psql -q {database_url} -c {create}")
                    .quiet()
                    .run()
                    .context("creating the run's database with psql")?;
                cleanup.database = Some((database_url.clone(), name.clone()));
                env.push(("FWB__DATABASE__URL".into(), with_database(database_url, &name)?));
                env.push(("FWB__CACHE__REDIS_URL".into(), redis_url.clone()));
                env.push(("FWB__CACHE__NAMESPACE".into(), format!("fwb-perf-{stamp}-{}", std::process::id())));
            }
            Backend::Containers => {
                let pg = start_container(
                    sh,
                    &mut cleanup,
                    "postgres:16-alpine",
                    "5432",
                    &["-e", "POSTGRES_HOST_AUTH_METHOD=trust"],
                )?;
                let redis = start_container(sh, &mut cleanup, "redis:7-alpine", "6379", &[])?;
                env.push(("FWB__DATABASE__URL".into(), format!("postgres://postgres@{pg}/postgres")));
                env.push(("FWB__CACHE__REDIS_URL".into(), format!("redis://{redis}")));
            }
        }

        let service_bin = stripped_copy(&bin.join("filewallball"), &temp.join("bin"))?;
        let created = Command::new(&service_bin)
            .args(["admin", "create-user", "--name", "perf-admin", "--role", "admin"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("running {}", service_bin.display()))?;
        let text = String::from_utf8_lossy(&created.stdout).into_owned() + &String::from_utf8_lossy(&created.stderr);
        let admin_key = text
            .split_whitespace()
            .find(|w| w.starts_with("fwb_"))
            .with_context(|| format!("no key in the output of admin create-user: {text}"))?
            .to_owned();

        let log = std::fs::File::create(out.join("service.log"))?;
        let service = Command::new(&service_bin)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = service.id();
        cleanup.service = Some(service);
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&base, &mut cleanup, Duration::from_secs(60))?;
        eprintln!("perf: service {pid} ready at {base}; data in {}", temp.display());
        Ok(Started { cleanup, backend, bin, base, pid, admin_key })
    }

    /// One fwb-loadtest run of the scenario against the started service into `out`, with `extra` arguments.
    fn load(&self, started: &Started, out: &Path, extra: &[String]) -> anyhow::Result<()> {
        let mut loadtest = Command::new(started.bin.join("fwb-loadtest"))
            .args(["--scenario".as_ref(), self.scenario.as_os_str()])
            .args(["--target", &started.base, "--out"])
            .arg(out)
            .args(["--service-pid", &started.pid.to_string(), "--backend", started.backend.label()])
            .args(self.no_profile.then_some("--no-profile"))
            .args(extra)
            .env("FWB_ADMIN_KEY", &started.admin_key)
            .spawn()?;
        let status = loop {
            if let Some(status) = loadtest.try_wait()? {
                break status;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                stop(&mut loadtest, Duration::from_secs(10));
                bail!("interrupted; the service and its data are being removed");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !status.success() {
            bail!("fwb-loadtest failed ({status}); see above and the service's log, service.log");
        }
        Ok(())
    }

    /// Steps the scenario's rate up against the one started service (its data set seeded once, reused by every
    /// step), each step a whole run judged on the scenario's targets, until the search is over; writes
    /// `capacity.json` and `capacity.txt`, compares with `--baseline` (a capacity.json) when given.
    fn find_capacity(&self, sh: &Shell, started: &mut Started, out: &Path, scenario_name: &str) -> anyhow::Result<()> {
        use fwb_reports::capacity::{self, Capacity, Search, Step};
        let base_users = scenario_value(&self.scenario, "users")?;
        let base_rate = scenario_value(&self.scenario, "rate")?;
        let baseline = self.baseline.as_deref().map(Capacity::read).transpose().map_err(anyhow::Error::msg)?;
        let mut search = Search::from_floor(base_rate, self.max_steps);
        // Compared with a baseline of the same scenario and backend, only the rates around its capacity matter.
        if let Some(rps) = baseline
            .as_ref()
            .filter(|b| b.scenario == scenario_name && b.backend == started.backend.label())
            .and_then(|b| b.capacity_rps)
        {
            search = search.near(rps);
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut tolerance = None;
        let begun = Instant::now();
        while let Some(rate) = search.next(&steps) {
            // Users grow with the rate: each keeps the scenario's own pace, so a step is limited by the service,
            // not by how many requests each user can have waiting.
            let users = ((base_users * rate / base_rate).ceil() as usize).max(1);
            let run = format!("step-{:02}-{rate:.0}rps", steps.len() + 1);
            let dir = out.join(&run);
            eprintln!("perf: capacity step {}: {rate:.0} req/s, {users} users", steps.len() + 1);
            let mut extra = vec!["--rate".to_owned(), format!("{rate:.3}"), "--users".to_owned(), users.to_string()];
            // A step is measured without the profiler's sampling.
            if !self.no_profile {
                extra.push("--no-profile".to_owned());
            }
            self.load(started, &dir, &extra)?;
            let summary = Summary::read(&dir.join("summary.json")).map_err(anyhow::Error::msg)?;
            let verdict = verdict::judge(&summary, None);
            std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&verdict)? + "\n")?;
            tolerance = summary.targets.tolerance.as_ref().and_then(|t| t.capacity).or(tolerance);
            steps.push(Step::from_run(rate, users, run, &summary, &verdict));
        }
        if let Some(mut service) = started.cleanup.service.take() {
            stop(&mut service, Duration::from_secs(15));
        }
        let git_revision = cmd!(sh, "git rev-parse HEAD").quiet().read().ok();
        let found = Capacity::new(
            scenario_name.to_owned(),
            started.backend.label().to_owned(),
            git_revision,
            search,
            tolerance.unwrap_or(capacity::DEFAULT_TOLERANCE),
            steps,
        );
        found.write(&out.join("capacity.json"))?;
        let mut text = found.table();
        let comparison = match (&self.baseline, &baseline) {
            (Some(path), Some(base)) => {
                let c = capacity::compare(&found, base);
                text += &format!("against {}: {c}\n", path.display());
                std::fs::write(out.join("capacity-verdict.json"), serde_json::to_string_pretty(&c)? + "\n")?;
                Some(c)
            }
            _ => None,
        };
        std::fs::write(out.join("capacity.txt"), &text)?;
        println!();
        print!("{text}");
        println!("searched in {:.0} s; run folder: {}", begun.elapsed().as_secs_f64(), out.display());
        if found.capacity_rps.is_none() {
            eprintln!("FAIL capacity: the scenario's own rate of {base_rate:.0} req/s was not held");
            return Err(GateFailed.into());
        }
        if let Some(c) = comparison.filter(capacity::Comparison::fails) {
            eprintln!("FAIL capacity against the baseline: {c}");
            return Err(GateFailed.into());
        }
        Ok(())
    }
}

/// The service as the run starts it: a copy of `binary` in `dir` without its debug information, the full binary
/// linked beside it as `filewallball.debug`. Taking a CPU profile makes pprof-rs resolve one backtrace, which loads
/// the binary's debug information (~210 MiB of RSS for ~40 MiB of DWARF, loaded mid-run); without it the service
/// loads only its symbol table, and `fwb_profiling::symbolize` finds the full binary by the `.debug` name. Without
/// `objcopy` (binutils) the binary runs as it is, and says so.
fn stripped_copy(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let (copy, full) = (dir.join("filewallball"), dir.join("filewallball.debug"));
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&copy)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        eprintln!("perf: no objcopy: the service runs with its debug information, which a CPU profile loads");
        return Ok(binary.to_owned());
    }
    if std::fs::hard_link(binary, &full).is_err() {
        std::fs::copy(binary, &full).with_context(|| format!("copying {}", binary.display()))?;
    }
    Ok(copy)
}

/// A number at the top level of the scenario file (fwb-loadtest validates the rest).
fn scenario_value(scenario: &Path, key: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(scenario).with_context(|| format!("reading {}", scenario.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}", scenario.display()))?;
    match table.get(key) {
        Some(toml::Value::Integer(n)) => Ok(*n as f64),
        Some(toml::Value::Float(x)) => Ok(*x),
        _ => bail!("{}: no number {key}", scenario.display()),
    }
}

/// Judges `summary` (against the baseline summary at the given path, if any), writes verdict.json, summary.md,
/// report.html and, with a baseline, the differential flamegraph into `out`, and prints the verdict; an error
/// (non-zero exit) when any check failed, naming each.
pub(crate) fn write_verdict(out: &Path, summary: &Summary, baseline: Option<(&Summary, &Path)>) -> anyhow::Result<()> {
    let verdict = verdict::judge(summary, baseline.map(|(b, _)| b));
    std::fs::write(out.join("verdict.json"), serde_json::to_string_pretty(&verdict)? + "\n")?;
    std::fs::write(out.join("summary.md"), fwb_reports::render::markdown(summary, &verdict))?;
    let differential = baseline.map(|(base, path)| differential_flamegraph(out, summary, base, path));
    if let Some(Err(why)) = &differential {
        eprintln!("perf: no differential flamegraph: {why}");
    }
    let differential = differential.as_ref().map(|d| d.as_deref().map_err(String::as_str));
    let html = fwb_reports::html::report(summary, &verdict, baseline.map(|(b, _)| b), differential);
    std::fs::write(out.join("report.html"), html)?;
    report(out, &verdict)
}

/// Draws this run's CPU profile against the baseline's into `out/flamegraph-diff.svg`; its name, or why not.
/// The baseline's folded stacks are `NAME.folded.gz` or `NAME.folded` beside a committed `NAME.json`, or the
/// file its summary names (a run folder's `summary.json`).
fn differential_flamegraph(out: &Path, run: &Summary, base: &Summary, base_path: &Path) -> Result<String, String> {
    let now = run.artifacts.folded.as_ref().ok_or("this run has no folded stacks (no CPU profile)")?;
    let beside = [base_path.with_extension("folded.gz"), base_path.with_extension("folded")];
    let named = base.artifacts.folded.as_ref().map(|f| base_path.parent().unwrap_or(Path::new(".")).join(f));
    let then = beside
        .into_iter()
        .chain(named)
        .find(|p| p.exists())
        .ok_or_else(|| format!("no folded stacks for the baseline {}", base_path.display()))?;
    let before = fwb_reports::flame::read_folded(&then).map_err(|e| format!("{}: {e}", then.display()))?;
    let after = fwb_reports::flame::read_folded(&out.join(now)).map_err(|e| format!("{now}: {e}"))?;
    let svg = fwb_reports::flame::differential(&before, &after, "this run against the baseline")?;
    std::fs::write(out.join("flamegraph-diff.svg"), svg).map_err(|e| e.to_string())?;
    Ok("flamegraph-diff.svg".to_owned())
}

/// Prints the verdict; an error (non-zero exit) when any check failed, naming each.
fn report(out: &Path, verdict: &Verdict) -> anyhow::Result<()> {
    // fwb-loadtest has printed the figures.
    println!();
    print!("{}", verdict.table());
    println!("run folder: {}", out.display());
    if verdict.passed {
        return Ok(());
    }
    for line in verdict.failures() {
        eprintln!("{line}");
    }
    Err(GateFailed.into())
}

/// The run completed and missed a target: the failures are printed, only the exit status is left to set.
#[derive(Debug)]
pub(crate) struct GateFailed;

impl std::fmt::Display for GateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the perf gate failed")
    }
}

impl std::error::Error for GateFailed {}

/// The scenario's `name` (fwb-loadtest validates the rest).
fn scenario_name_of(scenario: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(scenario).with_context(|| format!("reading {}", scenario.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}", scenario.display()))?;
    table
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: no name", scenario.display()))
}

fn wait_ready(base: &str, cleanup: &mut Cleanup, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let addr = base.trim_start_matches("http://");
    loop {
        if answers_200(addr, "/health/ready") {
            return Ok(());
        }
        if let Some(child) = cleanup.service.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("the service exited before it was ready ({status}); see service.log in the run folder");
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if start.elapsed() > deadline {
            bail!("the service was not ready after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.0 GET by hand: this crate has no HTTP client, and a machine may have no curl.
fn answers_200(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// `docker run` of `image` with `port` published on a free loopback port; returns `127.0.0.1:PORT`.
fn start_container(
    sh: &Shell,
    cleanup: &mut Cleanup,
    image: &str,
    port: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let id = cmd!(sh, "docker run -d --rm -p 127.0.0.1::{port} {args...} {image}").read()?;
    cleanup.containers.push(id.clone());
    let mapped = cmd!(sh, "docker port {id} {port}/tcp").read()?;
    let host_port = mapped.lines().next().and_then(|l| l.rsplit(':').next()).context("docker port printed nothing")?;
    Ok(format!("127.0.0.1:{host_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn auto_prefers_external_then_containers_then_embedded() {
        let both = [("FWB_DATABASE_URL", "postgres://db/x"), ("FWB_REDIS_URL", "redis://r")];
        let (b, why) = choose_backend(BackendChoice::Auto, env(&both), || panic!("docker asked")).unwrap();
        assert_eq!(b, Backend::External { database_url: "postgres://db/x".into(), redis_url: "redis://r".into() });
        assert!(why.contains("FWB_DATABASE_URL"));
        let (b, why) = choose_backend(BackendChoice::Auto, env(&[]), || true).unwrap();
        assert_eq!((b, why.as_str()), (Backend::Containers, "a Docker daemon answers"));
        let (b, why) = choose_backend(BackendChoice::Auto, env(&[]), || false).unwrap();
        assert_eq!(b, Backend::Embedded);
        assert!(why.contains("no Docker daemon"), "{why}");
    }

    #[test]
    fn a_backend_asked_for_must_be_available() {
        assert!(choose_backend(BackendChoice::External, env(&[]), || true).is_err());
        assert!(choose_backend(BackendChoice::Containers, env(&[]), || false).is_err());
        let half = [("FWB_DATABASE_URL", "postgres://db/x")];
        let error = choose_backend(BackendChoice::Auto, env(&half), || false).unwrap_err().to_string();
        assert!(error.contains("FWB_REDIS_URL"), "{error}");
        let (b, _) = choose_backend(BackendChoice::Embedded, env(&half[..0]), || panic!("docker asked")).unwrap();
        assert_eq!(b, Backend::Embedded);
    }

    #[test]
    fn the_run_database_replaces_the_callers_name_only() {
        assert_eq!(with_database("postgres://u@h:5432/test", "run1").unwrap(), "postgres://u@h:5432/run1");
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "r").unwrap(),
            "postgres://u@h/r?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5432", "r").unwrap(), "postgres://u@h:5432/r");
    }
}
