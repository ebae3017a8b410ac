//! One run, end to end: seed, drive the users, watch the service, write the summary and the artifacts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fwb_reports::{
    Artifacts, Class, MachineFigures, RateFigures, RequestStats, RunMeta, SCHEMA_VERSION, ServerFigures, Summary,
    TimelinePoint,
};
use sysinfo::System;

use crate::monitor::{self, Monitor, MonitorReport};
use crate::pacing::{self, Clock, Recorder};
use crate::scenario::Scenario;
use crate::seed::{self, Api};
use crate::workload::FileService;

/// What a run needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: PathBuf,
    pub target: String,
    pub admin_key: String,
    pub out: PathBuf,
    pub service_pid: Option<u32>,
    /// What the service stores its data in, for the summary.
    pub backend: String,
    /// Ask the service for a CPU profile of the middle of the steady state.
    pub profile: bool,
    /// Replaces the scenario's rate (to find the highest rate a deployment holds).
    pub rate: Option<f64>,
    /// Replaces the scenario's number of users.
    pub users: Option<usize>,
}

pub async fn run(options: &Options) -> anyhow::Result<Summary> {
    let mut scenario = Scenario::load(&options.scenario)?;
    if let Some(rate) = options.rate {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be above 0, not {rate}");
        scenario.rate = rate;
    }
    if let Some(users) = options.users {
        anyhow::ensure!(users > 0, "--users must be at least 1");
        scenario.users = users;
    }
    let scenario_hash = blake3::hash(&std::fs::read(&options.scenario)?).to_hex().to_string();
    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;
    let started_at = Utc::now();
    let api = Api::new(&options.target, Duration::from_secs(scenario.request_timeout_s.max(60)))?;
    api.wait_ready(Duration::from_secs(30)).await?;

    say(&format!(
        "seeding {} accounts and {} files on {} …",
        scenario.seed.accounts, scenario.seed.files, options.target
    ));
    let seeding = Instant::now();
    let data = Arc::new(seed::seed(&api, &options.admin_key, &scenario.seed).await?);
    say(&format!(
        "seeded in {:.1} s: {} files reused, {} uploaded ({} images)",
        seeding.elapsed().as_secs_f64(),
        data.reused,
        data.uploaded,
        data.images.len()
    ));

    let shape = scenario.shape();
    let clock = Clock::new(&shape);
    let recorder = Arc::new(Recorder::new(clock));
    let run_tag = started_at.format("%Y%m%dT%H%M%S").to_string();
    let workload = Arc::new(FileService::new(&scenario, data.clone(), run_tag));
    let monitor = Monitor {
        api: api.clone(),
        admin_key: options.admin_key.clone(),
        service_pid: options.service_pid,
        out_dir: options.out.clone(),
        profile: options.profile,
    };
    let watching = tokio::spawn(monitor.run(clock));
    let progress = tokio::spawn(progress(clock, recorder.clone(), scenario.rate));

    let reports: Vec<PathBuf> =
        ["goose-report.html", "goose-report.json", "goose-report.md"].iter().map(|f| options.out.join(f)).collect();
    let report_refs: Vec<&Path> = reports.iter().map(PathBuf::as_path).collect();
    say(&format!(
        "running {}: {} users, {} req/s, ramp {} s, warm-up {} s, steady {} s",
        scenario.name, scenario.users, scenario.rate, scenario.ramp_up_s, scenario.warm_up_s, scenario.steady_s
    ));
    let driven = pacing::drive(&options.target, &shape, clock, workload.clone(), recorder.clone(), &report_refs).await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let mut watched = watching.await.unwrap_or_default();
    let ended_at = Utc::now();
    clean_up(&api, &options.admin_key, &data, &workload).await;
    driven?;
    monitor::draw_profile(&mut watched).await;

    let finished = Finished {
        scenario: &scenario,
        scenario_hash,
        clock,
        started_at,
        ended_at,
        recorder: &recorder,
        watched: &watched,
    };
    let summary = summarize(options, finished)?;
    summary.write(&options.out.join("summary.json"))?;
    for problem in &watched.problems {
        say(&format!("warning: {problem}"));
    }
    Ok(summary)
}

/// Deletes what users uploaded and revokes this run's keys; problems are reported, not fatal.
async fn clean_up(api: &Api, admin_key: &str, data: &seed::DataSet, workload: &FileService) {
    for (account, files) in workload.leftovers() {
        let key = &data.accounts[account].key;
        for file in files {
            if let Err(e) = api.delete(key, &format!("/api/v1/files/{}", file.id)).await {
                say(&format!("warning: could not delete upload {}: {e}", file.name));
            }
        }
    }
    if let Err(e) = seed::release(api, admin_key, data).await {
        say(&format!("warning: could not revoke this run's keys: {e}"));
    }
}

/// Seconds after a CPU profile's capture left out of the memory growth: its buffers are the profiler's.
const PROFILE_SETTLING_S: f64 = 60.0;

/// What a finished run leaves to summarise.
struct Finished<'a> {
    scenario: &'a Scenario,
    scenario_hash: String,
    clock: Clock,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    recorder: &'a Recorder,
    watched: &'a MonitorReport,
}

fn summarize(options: &Options, run: Finished<'_>) -> anyhow::Result<Summary> {
    let classes = run.recorder.by_class();
    let steady_s = run.scenario.steady_s as f64;
    let (cores, memory) = machine_size();
    let machine = machine_figures(options, run.watched, cores, memory);
    let timeline = timeline(run.recorder, &run.watched.samples);
    let server = server_figures(run.watched, &timeline, cores, &machine);
    let cache = match (&run.watched.start, &run.watched.end) {
        (Some(a), Some(b)) => monitor::cache_between(a, b),
        _ => Default::default(),
    };
    let samples = &run.watched.samples;
    let loadtest =
        monitor::process_figures(samples.iter().map(|s| s.own_cpu_cores), samples.iter().map(|s| s.own_rss_bytes));
    Ok(Summary {
        schema_version: SCHEMA_VERSION,
        run: run_meta(options, &run, cores, memory),
        rate: rate_figures(&classes, steady_s, run.scenario.mean_steady_rate()),
        classes,
        requests: run.recorder.by_name(),
        cache,
        server,
        loadtest,
        machine,
        timeline,
        targets: run.scenario.targets.clone(),
        artifacts: artifacts(options, run.watched, run.recorder)?,
        pacing: run.recorder.lateness(),
        invalid: run.watched.invalid.clone(),
    })
}

fn run_meta(options: &Options, run: &Finished<'_>, cores: usize, memory: u64) -> RunMeta {
    let (git_revision, git_dirty) = git_state();
    RunMeta {
        git_revision,
        git_dirty,
        scenario: run.scenario.name.clone(),
        scenario_file: options.scenario.display().to_string(),
        scenario_hash: run.scenario_hash.clone(),
        target_url: options.target.clone(),
        backend: options.backend.clone(),
        cores,
        memory_bytes: memory,
        started_at: run.started_at,
        steady_started_at: DateTime::<Utc>::from(run.clock.wall(run.clock.steady_start)),
        ended_at: run.ended_at,
        users: run.scenario.users,
        steady_seconds: run.scenario.steady_s as f64,
    }
}

fn machine_figures(options: &Options, watched: &MonitorReport, cores: usize, memory: u64) -> MachineFigures {
    let samples = &watched.samples;
    let busy: Vec<f64> = samples.iter().filter_map(|s| s.machine_cpu_busy).collect();
    MachineFigures {
        cores,
        memory_bytes: memory,
        cpu_busy_mean: (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64),
        cpu_busy_max: busy.iter().copied().reduce(f64::max),
        memory_used_max_bytes: samples.iter().filter_map(|s| s.machine_memory_used).max(),
        disk_used_fraction: monitor::disk_used_fraction(&options.out),
        service_memory_limit_bytes: watched.memory_limit.filter(|&l| l < memory),
    }
}

/// The recorder's seconds with the service's CPU and memory of each.
fn timeline(recorder: &Recorder, samples: &[monitor::Sample1s]) -> Vec<TimelinePoint> {
    let mut timeline = recorder.timeline();
    for sample in samples {
        // A sample at t covers the second before it.
        if let Some(point) = sample.t_s.checked_sub(1).and_then(|t| timeline.get_mut(t as usize)) {
            point.server_cpu_cores = sample.server_cpu_cores;
            point.server_rss_bytes = sample.server_rss_bytes;
        }
    }
    timeline
}

fn server_figures(
    watched: &MonitorReport,
    timeline: &[TimelinePoint],
    cores: usize,
    machine: &MachineFigures,
) -> ServerFigures {
    let samples = &watched.samples;
    let process = monitor::process_figures(
        samples.iter().map(|s| s.server_cpu_cores),
        samples.iter().map(|s| s.server_rss_bytes),
    );
    let profile_window = watched.profile_window.map(|(from, to)| (f64::from(from), f64::from(to)));
    let profiler = watched.profile_window.filter(|_| watched.profile_addresses.is_some()).map(|window| {
        let readings: Vec<_> = samples.iter().map(|s| (s.t_s, s.server_cpu_cores, s.server_rss_bytes)).collect();
        fwb_reports::ProfilerCost::from_samples(&readings, window)
    });
    let rss: Vec<(f64, f64)> =
        samples.iter().filter_map(|s| Some((f64::from(s.t_s), s.server_rss_bytes? as f64))).collect();
    ServerFigures {
        source: watched.source.to_owned(),
        process,
        cpu_fraction_mean: process.cpu_cores_mean.map(|c| c / cores as f64),
        memory_fraction_max: process.rss_bytes_max.map(|b| b as f64 / machine.service_memory_bytes().max(1) as f64),
        cpu_us_per_request: cpu_per_request(samples, timeline, profile_window),
        rss_growth_mib_per_10min: fwb_reports::rss_growth(
            &rss,
            profile_window.map(|(from, to)| (from, to + PROFILE_SETTLING_S)),
        ),
        profiler,
        latency: match (&watched.start, &watched.end) {
            (Some(a), Some(b)) => monitor::latency_between(a, b),
            _ => Default::default(),
        },
    }
}

/// The run folder's files the summary points at, relative to the folder.
fn artifacts(options: &Options, watched: &MonitorReport, recorder: &Recorder) -> anyhow::Result<Artifacts> {
    let in_dir = |p: &Path| p.strip_prefix(&options.out).unwrap_or(p).display().to_string();
    Ok(Artifacts {
        goose_reports: ["goose-report.html", "goose-report.json", "goose-report.md"]
            .iter()
            .filter(|f| options.out.join(f).exists())
            .map(|f| (*f).to_owned())
            .collect(),
        histograms: recorder.write_histograms(&options.out)?,
        flamegraph: watched.flamegraph.as_deref().map(in_dir),
        folded: watched.folded.as_deref().map(in_dir),
        flamegraph_note: watched.flamegraph_note.clone(),
    })
}

/// Requests due in the steady state and what became of them; the achieved rate counts successes only.
fn rate_figures(classes: &BTreeMap<Class, RequestStats>, steady_s: f64, target_rps: f64) -> RateFigures {
    let count: u64 = classes.values().map(|s| s.count).sum();
    let errors: u64 = classes.values().map(|s| s.errors).sum();
    let missed: u64 = classes.values().map(|s| s.missed).sum();
    let achieved_rps = count.saturating_sub(errors + missed) as f64 / steady_s;
    RateFigures {
        target_rps,
        achieved_rps,
        achieved_fraction: achieved_rps / target_rps,
        requests: count,
        errors,
        missed,
        error_rate: if count == 0 { 0.0 } else { (errors + missed) as f64 / count as f64 },
    }
}

/// The service's CPU time per request due, in µs, over the seconds of the steady state outside `excluded` (a
/// CPU profile's capture and rendering, whose cost is the profiler's). A sample at `t` covers the second before.
fn cpu_per_request(
    samples: &[monitor::Sample1s],
    timeline: &[TimelinePoint],
    excluded: Option<(f64, f64)>,
) -> Option<f64> {
    let outside = |second: f64| excluded.is_none_or(|(from, to)| second + 1.0 <= from || second >= to);
    let (mut cpu_s, mut requests) = (0.0, 0u64);
    for sample in samples {
        let (Some(second), Some(cores)) = (sample.t_s.checked_sub(1), sample.server_cpu_cores) else { continue };
        let Some(point) = timeline.get(second as usize) else { continue };
        if outside(f64::from(second)) {
            cpu_s += cores;
            requests += point.requests;
        }
    }
    (requests > 0).then(|| cpu_s * 1e6 / requests as f64)
}

/// Cores and bytes of memory of this machine.
pub fn machine_size() -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = System::new_with_specifics(
        sysinfo::RefreshKind::nothing().with_memory(sysinfo::MemoryRefreshKind::everything()),
    )
    .map_or(0, |s| s.total_memory());
    (cores, memory)
}

/// The checkout's revision and whether it has changes, when run inside one.
fn git_state() -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "HEAD"]);
    let dirty =
        revision.as_ref().and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"])).map(|s| !s.is_empty());
    (revision, dirty)
}

fn say(line: &str) {
    eprintln!("fwb-loadtest: {line}");
}

/// Elapsed time, phase, current rate and errors: a line rewritten in place on a terminal, a plain line every
/// ten seconds otherwise.
async fn progress(clock: Clock, recorder: Arc<Recorder>, target: f64) {
    let tty = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if tty { 1 } else { 10 });
    let total = clock.end.duration_since(clock.started).as_secs();
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval_at((Instant::now() + every).into(), every);
    loop {
        let now = tick.tick().await.into_std();
        let done = recorder.completed.load(Ordering::Relaxed);
        let failed = recorder.failed.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        let phase = if now < clock.steady_start {
            "warming"
        } else if now < clock.steady_end {
            "steady"
        } else {
            "draining"
        };
        let error =
            recorder.last_error.lock().unwrap().clone().map(|e| format!("  last error: {e}")).unwrap_or_default();
        let line = format!(
            "[{:>4}/{total} s] {phase:<8} {rate:>7.0} req/s (target {target})  {done} done  {failed} errors{error}",
            now.duration_since(clock.started).as_secs()
        );
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{}", line.chars().take(160).collect::<String>());
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_achieved_rate_counts_successes_only() {
        let stats = |count, errors, missed| RequestStats {
            class: Class::Api,
            count,
            errors,
            missed,
            error_rate: 0.0,
            corrected: Default::default(),
            sent: Default::default(),
            corrected_curve: vec![],
            sent_curve: vec![],
            status: BTreeMap::new(),
            top_errors: vec![],
            shedding: None,
            p95_windows_ms: vec![],
        };
        let classes = [(Class::Api, stats(900, 40, 30)), (Class::Download, stats(100, 10, 20))].into();
        let rate = rate_figures(&classes, 10.0, 100.0);
        assert_eq!((rate.requests, rate.errors, rate.missed), (1000, 50, 50));
        assert_eq!(rate.achieved_rps, 90.0);
        assert_eq!(rate.achieved_fraction, 0.9);
        assert_eq!(rate.error_rate, 0.1);
    }

    #[test]
    fn cpu_per_request_leaves_out_the_profilers_seconds() {
        // 10 s at 100 requests a second; 0.1 cores each second, 1.1 cores while the profile is taken and rendered.
        let timeline: Vec<TimelinePoint> = (0..10)
            .map(|t| TimelinePoint { t_s: t, requests: 100, errors: 0, server_cpu_cores: None, server_rss_bytes: None })
            .collect();
        let samples: Vec<monitor::Sample1s> = (1..=10)
            .map(|t| monitor::Sample1s {
                t_s: t,
                server_cpu_cores: Some(if (4..7).contains(&(t - 1)) { 1.1 } else { 0.1 }),
                ..Default::default()
            })
            .collect();
        let per_request = cpu_per_request(&samples, &timeline, Some((4.0, 7.0))).unwrap();
        assert!((per_request - 1000.0).abs() < 1e-6, "{per_request}");
        assert!(cpu_per_request(&samples, &timeline, None).unwrap() > 3000.0);
    }
}
