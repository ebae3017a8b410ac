//! The run summary: what one load-test run measured, as `summary.json`.
//!
//! `fwb-loadtest` writes it; the perf gate reads it (a baseline is a summary from an earlier run).
//! Every change to a field's meaning bumps [`SCHEMA_VERSION`]; readers refuse versions they do not know.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

pub mod capacity;
pub mod flame;
pub mod html;
pub mod instructions;
pub mod render;
pub mod stats;
pub mod verdict;
mod versioned;
use serde::{Deserialize, Serialize};

/// The version of the schema below, written into every summary.
pub const SCHEMA_VERSION: u32 = 2;

/// The cache families that hold data a request asks for, which the performance guide's cache-hit target is about. The
/// permission family (`user_perm`) is left out: with a hundred accounts it hits nearly always, and counted in it
/// would lift a data hit ratio of 64 % to a total of 80 %.
pub const DATA_FAMILIES: [&str; 4] = ["file_meta", "file_content", "thumbnail", "search"];

/// The latency classes of the performance guide's targets; every request belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Metadata, listing, search and changes: small JSON answers.
    Api,
    /// File bytes: whole files, ranges, revalidations, thumbnails.
    Download,
    /// Multipart uploads.
    Upload,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Api, Class::Download, Class::Upload];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Api => "api",
            Class::Download => "download",
            Class::Upload => "upload",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run must achieve to pass; part of a scenario, copied into its summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// 95th percentile of the coordinated-omission-corrected latency, per class, in milliseconds.
    #[serde(default)]
    pub p95_ms: BTreeMap<Class, f64>,
    /// Failed requests over all requests of the steady state, 0–1.
    pub max_error_rate: f64,
    /// Cache hits over lookups of the steady state, the data families together ([`DATA_FAMILIES`]), 0–1.
    pub min_cache_hit_ratio: Option<f64>,
    /// Requests due in the steady state that succeeded, per second, over the target rate, 0–1.
    pub min_achieved_rate: f64,
    /// The service process's mean CPU use as a fraction of the machine's cores, 0–1.
    pub max_service_cpu: Option<f64>,
    /// The service process's largest resident set as a fraction of the machine's memory, 0–1.
    pub max_service_memory: Option<f64>,
    /// Growth of the service's resident set over the steady state, MiB per 10 minutes: a long run must hold
    /// its memory flat, which the maximum alone cannot tell.
    #[serde(default)]
    pub max_rss_growth_mib_per_10min: Option<f64>,
    /// How far figures may move against a baseline run before the gate calls it a regression.
    #[serde(default)]
    pub tolerance: Option<Tolerance>,
}

/// Allowed movement against a baseline, as fractions: `p95 = 0.15` lets a p95 grow by 15 %.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Growth of each class's typical p95: the median of its per-window p95s ([`RequestStats::p95_windows_ms`]).
    /// A regression counts only when the growth is beyond this with 95 % confidence (see [`verdict`]).
    pub p95: f64,
    /// Drop of the achieved rate.
    pub throughput: f64,
    /// Growth of the service's CPU time per request ([`ServerFigures::cpu_us_per_request`]); unset: not compared.
    #[serde(default)]
    pub cpu_per_request: Option<f64>,
    /// Drop of the capacity found by `cargo xtask perf --find-capacity` ([`capacity`]); unset:
    /// [`capacity::DEFAULT_TOLERANCE`].
    #[serde(default)]
    pub capacity: Option<f64>,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub run: RunMeta,
    pub rate: RateFigures,
    /// Per latency class (`api`, `download`, `upload`).
    pub classes: BTreeMap<Class, RequestStats>,
    /// Per request name (`get_metadata`, `download_range`, …).
    pub requests: BTreeMap<String, RequestStats>,
    /// Cache lookups during exactly the steady state, per family, from the service's /metrics.
    pub cache: CacheFigures,
    pub server: ServerFigures,
    /// The load generator's own process.
    pub loadtest: ProcessFigures,
    pub machine: MachineFigures,
    /// One point per second of the steady state.
    pub timeline: Vec<TimelinePoint>,
    pub targets: Targets,
    pub artifacts: Artifacts,
    /// How late the load generator sent its requests after they were due: its own share of the due-time latency.
    #[serde(default)]
    pub pacing: Option<Percentiles>,
    /// Why the run's figures cannot be trusted (a counter reset between the scrapes, a service restart, CPU
    /// samples lost): any reason fails the gate, rather than letting a broken figure read as a good one.
    #[serde(default)]
    pub invalid: Vec<String>,
}

impl Summary {
    pub fn read(path: &Path) -> Result<Self, String> {
        crate::versioned::read(path, "summary", SCHEMA_VERSION)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::versioned::write(self, path)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// `git rev-parse HEAD` where the load test ran, if it ran in a checkout.
    pub git_revision: Option<String>,
    /// Uncommitted changes in that checkout.
    pub git_dirty: Option<bool>,
    pub scenario: String,
    pub scenario_file: String,
    /// BLAKE3 of the scenario file's bytes.
    pub scenario_hash: String,
    pub target_url: String,
    /// What the service stored its data in, as the caller said (`embedded`, `external`, …).
    pub backend: String,
    /// Of the machine the load generator ran on.
    pub cores: usize,
    pub memory_bytes: u64,
    pub started_at: DateTime<Utc>,
    /// When the steady state, the measured window, began and ended.
    pub steady_started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub users: usize,
    pub steady_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateFigures {
    /// Requests per second the scenario asked for in the steady state (the mean, with a spike counted in).
    pub target_rps: f64,
    /// Requests due in the steady state that succeeded, over its length.
    pub achieved_rps: f64,
    /// `achieved_rps / target_rps`.
    pub achieved_fraction: f64,
    /// Every request due in the steady state: succeeded, failed, or missed.
    pub requests: u64,
    /// Sent and failed (no answer, a wrong status or body).
    pub errors: u64,
    /// Due but never sent: the run ended while its user still waited on an earlier answer.
    #[serde(default)]
    pub missed: u64,
    /// `(errors + missed) / requests`.
    pub error_rate: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    pub class: Class,
    /// Every request due in the steady state, missed ones included.
    pub count: u64,
    pub errors: u64,
    /// Due but never sent; their latency, from the due time to the end of the run, is in `corrected`.
    #[serde(default)]
    pub missed: u64,
    /// `(errors + missed) / count`.
    pub error_rate: f64,
    /// From when the request was due by its user's schedule: what a client that keeps its own pace waits.
    /// Corrected for coordinated omission; the targets apply to this one.
    pub corrected: Percentiles,
    /// From when the request was sent.
    pub sent: Percentiles,
    /// The latency curves: `[percentile (0–100), ms]` from the median to the maximum, for charts.
    #[serde(default)]
    pub corrected_curve: Vec<[f64; 2]>,
    #[serde(default)]
    pub sent_curve: Vec<[f64; 2]>,
    /// Responses per HTTP status; `"error"` for requests that got none (refused, reset, timed out).
    pub status: BTreeMap<String, u64>,
    /// The most frequent error messages, most frequent first.
    pub top_errors: Vec<ErrorCount>,
    /// When the service shed load (503 answers, counted in `errors` and in the percentiles above): the
    /// corrected latency of the requests it admitted, and the sent latency of those it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shedding: Option<Shedding>,
    /// The corrected p95 of each window of the steady state in order (consecutive seconds, merged until a window
    /// holds [`WINDOW_MIN_REQUESTS`]): what a comparison with a baseline judges, with its spread.
    #[serde(default)]
    pub p95_windows_ms: Vec<f64>,
}

/// The fewest requests a latency window holds: a p95 of fewer is little more than their maximum.
pub const WINDOW_MIN_REQUESTS: usize = 20;

/// What admission control did to one request name or class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shedding {
    /// Requests answered 503.
    pub shed: u64,
    /// From due time, over every request that was not shed.
    pub admitted: Percentiles,
    /// From send time, over the shed ones: how fast a refusal came back.
    pub refused: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CacheFigures {
    pub families: BTreeMap<String, CacheFamily>,
    /// The data families together ([`DATA_FAMILIES`]): what the cache-hit target judges.
    pub data: CacheFamily,
    /// All families together, the permission cache included.
    pub total: CacheFamily,
}

impl CacheFigures {
    /// Per-family figures, and the data and overall totals from them.
    pub fn from_families(families: BTreeMap<String, CacheFamily>) -> Self {
        let sum = |data_only: bool| {
            let (h, m) = families
                .iter()
                .filter(|(f, _)| !data_only || DATA_FAMILIES.contains(&f.as_str()))
                .fold((0, 0), |(h, m), (_, c)| (h + c.hits, m + c.misses));
            CacheFamily::new(h, m)
        };
        Self { data: sum(true), total: sum(false), families }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CacheFamily {
    pub hits: u64,
    pub misses: u64,
    /// `hits / (hits + misses)`; `None` when there were no lookups.
    pub ratio: Option<f64>,
}

impl CacheFamily {
    pub fn new(hits: u64, misses: u64) -> Self {
        let lookups = hits + misses;
        Self { hits, misses, ratio: (lookups > 0).then(|| hits as f64 / lookups as f64) }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    /// Where CPU and memory came from: `proc` (the process's /proc entry), `metrics` (its /metrics), or `none`.
    pub source: String,
    pub process: ProcessFigures,
    /// Mean CPU as a fraction of this machine's cores, 0–1.
    pub cpu_fraction_mean: Option<f64>,
    /// Largest resident set as a fraction of the memory the service may use
    /// ([`MachineFigures::service_memory_bytes`]), 0–1.
    pub memory_fraction_max: Option<f64>,
    /// The service's CPU time over the steady state divided by the requests due in it, in microseconds; the
    /// seconds of a CPU profile's capture and rendering are left out of both.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
    /// How fast the resident set grew over the steady state, MiB per 10 minutes (see [`rss_growth`]).
    #[serde(default)]
    pub rss_growth_mib_per_10min: Option<f64>,
    /// What taking the CPU profile cost the service in this run, when one was taken.
    #[serde(default)]
    pub profiler: Option<ProfilerCost>,
    /// The service's own request-duration histogram over the steady state, per endpoint (method and route);
    /// percentiles are bucket upper bounds.
    pub latency: BTreeMap<String, ServerLatency>,
}

/// The CPU profile's cost to the service, read off the run's own one-second samples: its CPU while the profile
/// was taken against the rest of the steady state, and its largest resident set before the capture and after.
/// (Its latency cost is a second run's comparison: `--no-profile`.)
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProfilerCost {
    /// Seconds into the steady state when the capture began and when the profile arrived.
    pub from_s: u32,
    pub to_s: u32,
    pub cpu_cores_during: Option<f64>,
    pub cpu_cores_outside: Option<f64>,
    pub rss_max_before_bytes: Option<u64>,
    pub rss_max_after_bytes: Option<u64>,
}

impl ProfilerCost {
    /// From `(t_s, cpu cores, rss bytes)` samples, where a sample at `t` covers the second before it, and the
    /// profile's window in seconds of the steady state.
    pub fn from_samples(samples: &[(u32, Option<f64>, Option<u64>)], (from_s, to_s): (u32, u32)) -> Self {
        let during = |t: u32| t.checked_sub(1).is_some_and(|s| (from_s..to_s.max(from_s + 1)).contains(&s));
        let mean = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        ProfilerCost {
            from_s,
            to_s,
            cpu_cores_during: mean(samples.iter().filter(|s| during(s.0)).filter_map(|s| s.1).collect()),
            cpu_cores_outside: mean(samples.iter().filter(|s| !during(s.0)).filter_map(|s| s.1).collect()),
            rss_max_before_bytes: samples.iter().filter(|s| s.0 <= from_s).filter_map(|s| s.2).max(),
            rss_max_after_bytes: samples.iter().filter(|s| s.0 > from_s).filter_map(|s| s.2).max(),
        }
    }
}

/// One line for the tables and the report: where the profile was taken and what it cost the service.
impl std::fmt::Display for ProfilerCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
        let mib = |b: Option<u64>| b.map_or("-".to_owned(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
        write!(
            f,
            "CPU profile (steady s {}–{}): service cpu {} cores while taken, {} outside; rss max {} before, {} after",
            self.from_s,
            self.to_s,
            cores(self.cpu_cores_during),
            cores(self.cpu_cores_outside),
            mib(self.rss_max_before_bytes),
            mib(self.rss_max_after_bytes),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessFigures {
    /// CPU in cores (1.0 = one core busy), sampled once a second.
    pub cpu_cores_mean: Option<f64>,
    pub cpu_cores_max: Option<f64>,
    pub rss_bytes_mean: Option<u64>,
    pub rss_bytes_max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerLatency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineFigures {
    pub cores: usize,
    pub memory_bytes: u64,
    /// All cores busy = 1.
    pub cpu_busy_mean: Option<f64>,
    pub cpu_busy_max: Option<f64>,
    pub memory_used_max_bytes: Option<u64>,
    /// The filesystem holding the output directory: used over size, at the end.
    pub disk_used_fraction: Option<f64>,
    /// The memory limit of the service's cgroup, when it is below the machine's memory: then the service's
    /// memory fraction is of this.
    #[serde(default)]
    pub service_memory_limit_bytes: Option<u64>,
}

impl MachineFigures {
    /// What the service's memory fraction is of: its cgroup's limit when that is lower, else the machine's memory.
    pub fn service_memory_bytes(&self) -> u64 {
        self.service_memory_limit_bytes.map_or(self.memory_bytes, |l| l.min(self.memory_bytes))
    }

    /// The service's memory fraction's denominator, in words.
    pub fn service_memory_of(&self) -> &'static str {
        if self.service_memory_limit_bytes.is_some_and(|l| l < self.memory_bytes) {
            "its cgroup's limit"
        } else {
            "RAM"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the steady state began.
    pub t_s: u32,
    /// Requests due in this second that completed, and how many of them failed.
    pub requests: u64,
    pub errors: u64,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_bytes: Option<u64>,
}

/// Files next to `summary.json`, relative to its directory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Artifacts {
    pub goose_reports: Vec<String>,
    /// HdrHistogram V2 logs, by `class/NAME` and `request/NAME`; each holds a `corrected` and a `sent` histogram.
    pub histograms: BTreeMap<String, String>,
    pub flamegraph: Option<String>,
    /// The CPU profile's folded stacks, which the flamegraph is drawn from and a later run's is compared with.
    #[serde(default)]
    pub folded: Option<String>,
    /// Why there is no flamegraph, when there is none.
    pub flamegraph_note: Option<String>,
}

/// A table of the main figures, for a terminal.
pub fn summary_table(s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {} ({}): {:.1} of {:.1} req/s succeeded ({:.1} %), {} requests due, {} errors, {} missed ({:.3} %)",
        s.run.scenario,
        s.run.target_url,
        s.run.backend,
        s.rate.achieved_rps,
        s.rate.target_rps,
        s.rate.achieved_fraction * 100.0,
        s.rate.requests,
        s.rate.errors,
        s.rate.missed,
        s.rate.error_rate * 100.0
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>7}   {:>9} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}",
        "", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "sent p50", "sent p95", "sent p99"
    );
    let rows = s
        .classes
        .iter()
        .map(|(c, st)| (format!("[{c}]"), st))
        .chain(s.requests.iter().map(|(n, st)| (format!("  {n}"), st)));
    for (label, st) in rows {
        let (c, x) = (&st.corrected, &st.sent);
        let _ = writeln!(
            out,
            "{label:<16} {:>8} {:>7}   {:>9.2} {:>9.2} {:>9.2} {:>9.2}   {:>9.2} {:>9.2} {:>9.2}",
            st.count, st.errors, c.p50_ms, c.p95_ms, c.p99_ms, c.max_ms, x.p50_ms, x.p95_ms, x.p99_ms
        );
    }
    let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:.1} %", r * 100.0));
    let families: Vec<String> = s.cache.families.iter().map(|(f, c)| format!("{f} {}", ratio(c.ratio))).collect();
    let _ = writeln!(
        out,
        "cache hit ratio {} over the data families, {} with the permission cache ({})",
        ratio(s.cache.data.ratio),
        ratio(s.cache.total.ratio),
        families.join(", ")
    );
    let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
    let mib = |b: Option<u64>| b.map_or("-".to_owned(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
    let _ = writeln!(
        out,
        "service ({}): cpu mean {} max {} cores, {} per request, rss mean {} max {}; loadtest: cpu mean {} cores, rss max {}; machine busy {}",
        s.server.source,
        cores(s.server.process.cpu_cores_mean),
        cores(s.server.process.cpu_cores_max),
        s.server.cpu_us_per_request.map_or("-".to_owned(), |us| format!("{us:.0} µs")),
        mib(s.server.process.rss_bytes_mean),
        mib(s.server.process.rss_bytes_max),
        cores(s.loadtest.cpu_cores_mean),
        mib(s.loadtest.rss_bytes_max),
        ratio(s.machine.cpu_busy_mean),
    );
    if let Some(p) = &s.server.profiler {
        let _ = writeln!(out, "{p}");
    }
    if let Some(p) = &s.pacing {
        let _ = writeln!(
            out,
            "load generator lateness (sent after due): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p.p50_ms, p.p99_ms, p.max_ms
        );
    }
    for reason in &s.invalid {
        let _ = writeln!(out, "INVALID: {reason}");
    }
    out
}

/// The growth of a resident set, in MiB per 10 minutes: the least-squares slope of `samples` (seconds, bytes),
/// leaving out `excluded` (a CPU profile's capture and the settling after it, whose buffers are the profiler's).
/// The samples on either side of the gap are fitted apart and their slopes weighted by their lengths, so the
/// profiler's step is not read as growth. `None` with fewer than a minute of samples.
pub fn rss_growth(samples: &[(f64, f64)], excluded: Option<(f64, f64)>) -> Option<f64> {
    const MIN_SPAN_S: f64 = 60.0;
    let (before, after): (Vec<_>, Vec<_>) = match excluded {
        None => (samples.to_vec(), Vec::new()),
        Some((from, to)) => {
            let before = samples.iter().copied().filter(|(t, _)| *t < from).collect();
            let after = samples.iter().copied().filter(|(t, _)| *t > to).collect();
            (before, after)
        }
    };
    let fitted: Vec<(f64, f64)> = [before, after]
        .iter()
        .filter_map(|part| {
            let span = part.last()?.0 - part.first()?.0;
            (span >= MIN_SPAN_S).then(|| (slope(part), span))
        })
        .collect();
    let total: f64 = fitted.iter().map(|(_, span)| span).sum();
    (total > 0.0).then(|| {
        let bytes_per_s = fitted.iter().map(|(slope, span)| slope * span).sum::<f64>() / total;
        bytes_per_s * 600.0 / (1024.0 * 1024.0)
    })
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ratio_is_absent_without_lookups() {
        assert_eq!(CacheFamily::new(0, 0).ratio, None);
        assert_eq!(CacheFamily::new(3, 1).ratio, Some(0.75));
    }

    #[test]
    fn the_profilers_cost_is_its_window_against_the_rest() {
        // 20 s; the profile from 8 s to 12 s: 0.3 cores then instead of 0.1, and 60 MiB more from then on.
        let samples: Vec<(u32, Option<f64>, Option<u64>)> = (1..=20)
            .map(|t| {
                let profiling = (8..12).contains(&(t - 1));
                (t, Some(if profiling { 0.3 } else { 0.1 }), Some(if t > 8 { 110 << 20 } else { 50 << 20 }))
            })
            .collect();
        let cost = ProfilerCost::from_samples(&samples, (8, 12));
        assert_eq!(
            (cost.cpu_cores_during, cost.rss_max_before_bytes, cost.rss_max_after_bytes),
            (Some(0.3), Some(50 << 20), Some(110 << 20))
        );
        assert!((cost.cpu_cores_outside.unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn rss_growth_is_the_slope_without_the_profilers_step() {
        const MIB: f64 = 1024.0 * 1024.0;
        // 1 MiB a minute for 20 minutes, and a 250 MiB step from 600 s to 630 s (a CPU profile).
        let samples: Vec<(f64, f64)> = (0..1200)
            .map(|t| {
                let t = f64::from(t);
                (t, 50.0 * MIB + t / 60.0 * MIB + if t >= 600.0 { 250.0 * MIB } else { 0.0 })
            })
            .collect();
        let growth = rss_growth(&samples, Some((600.0, 690.0))).unwrap();
        assert!((growth - 10.0).abs() < 0.01, "{growth}");
        // Unexcluded, the step reads as hundreds of MiB of growth.
        assert!(rss_growth(&samples, None).unwrap() > 100.0);
        let flat: Vec<(f64, f64)> = (0..600).map(|t| (f64::from(t), 80.0 * MIB + f64::from(t % 7) * 4096.0)).collect();
        assert!(rss_growth(&flat, None).unwrap().abs() < 0.05);
        assert_eq!(rss_growth(&flat[..30], None), None, "half a minute says nothing");
    }

    #[test]
    fn a_summary_of_another_schema_version_is_refused() {
        let dir = std::env::temp_dir().join(format!("fwb-reports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        std::fs::write(&path, r#"{"schema_version": 999}"#).unwrap();
        let error = Summary::read(&path).unwrap_err();
        assert!(error.contains("schema version 999"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
