//! What the service and the machine did during the steady state: /metrics at its start and end, CPU and
//! memory once a second, and a CPU profile of its middle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fwb_reports::{CacheFamily, CacheFigures, ProcessFigures, ServerLatency};
use sysinfo::{Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

use crate::pacing::Clock;
use crate::seed::Api;

/// The counters read from one /metrics scrape.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub cache_hits: BTreeMap<String, f64>,
    pub cache_misses: BTreeMap<String, f64>,
    /// `METHOD endpoint` → cumulative bucket counts by upper bound (seconds).
    pub latency: BTreeMap<String, Vec<(f64, f64)>>,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// When the process started (seconds since the epoch): another value in a later scrape is a restart.
    pub start_time: Option<f64>,
}

impl MetricsSnapshot {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut snap = MetricsSnapshot::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample =
                parse_sample(line).ok_or_else(|| anyhow::anyhow!("/metrics line {}: cannot read {line:?}", n + 1))?;
            let label = |key: &str| sample.labels.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
            match sample.name {
                "cache_hits_total" => {
                    *snap.cache_hits.entry(label("cache_type").to_owned()).or_default() += sample.value
                }
                "cache_misses_total" => {
                    *snap.cache_misses.entry(label("cache_type").to_owned()).or_default() += sample.value
                }
                "process_cpu_seconds_total" => snap.cpu_seconds = Some(sample.value),
                "process_resident_memory_bytes" => snap.rss_bytes = Some(sample.value),
                "process_start_time_seconds" => snap.start_time = Some(sample.value),
                "http_request_duration_seconds_bucket" => {
                    let Ok(le) = label("le").parse::<f64>() else { continue };
                    let endpoint = format!("{} {}", label("method"), label("endpoint"));
                    let buckets = snap.latency.entry(endpoint).or_default();
                    // Summed over the status label.
                    match buckets.iter_mut().find(|(l, _)| *l == le) {
                        Some(slot) => slot.1 += sample.value,
                        None => buckets.push((le, sample.value)),
                    }
                }
                _ => {}
            }
        }
        for buckets in snap.latency.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(snap)
    }
}

/// One sample line of the Prometheus text format.
struct ParsedSample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Reads `name{key="value",…} value [timestamp]`. Written here because the crate for it (prometheus-parse 0.2)
/// drops samples whose label values hold braces, as the service's route templates (`/api/v1/files/{id}`) do.
fn parse_sample(line: &str) -> Option<ParsedSample<'_>> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| *c == ',' || c.is_whitespace()).is_some() {}
            match chars.peek()? {
                (i, '}') => {
                    rest = &after[i + 1..];
                    break;
                }
                &(start, _) => {
                    let eq = after[start..].find('=')? + start;
                    let key = after[start..eq].trim().to_owned();
                    while chars.next_if(|(i, _)| *i <= eq).is_some() {}
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((key, value));
                }
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(ParsedSample { name, labels, value })
}

/// Cache lookups between two scrapes (see [`counters_went_back`] for scrapes that cannot be compared).
pub fn cache_between(start: &MetricsSnapshot, end: &MetricsSnapshot) -> CacheFigures {
    let delta = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, k: &str| {
        (b.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0)).max(0.0) as u64
    };
    let families: std::collections::BTreeSet<&String> = end.cache_hits.keys().chain(end.cache_misses.keys()).collect();
    CacheFigures::from_families(
        families
            .into_iter()
            .map(|family| {
                let h = delta(&start.cache_hits, &end.cache_hits, family);
                let m = delta(&start.cache_misses, &end.cache_misses, family);
                (family.clone(), CacheFamily::new(h, m))
            })
            .collect(),
    )
}

/// Why two scrapes of one process cannot be subtracted: it restarted between them, or a counter went back
/// (a counter only grows while its process lives). Each reason makes the run invalid.
pub fn counters_went_back(start: &MetricsSnapshot, end: &MetricsSnapshot) -> Vec<String> {
    let mut reasons = Vec::new();
    if let (Some(a), Some(b)) = (start.start_time, end.start_time)
        && a != b
    {
        reasons.push(format!("the service restarted during the steady state (started at {a}, then at {b})"));
    }
    let mut back = |what: String, a: f64, b: f64| {
        if b < a {
            reasons.push(format!("{what} went back from {a} to {b} between the scrapes (a restart?)"));
        }
    };
    for (name, a, b) in
        [("cache hits", &start.cache_hits, &end.cache_hits), ("cache misses", &start.cache_misses, &end.cache_misses)]
    {
        for (family, &was) in a {
            back(format!("{name} of {family}"), was, b.get(family).copied().unwrap_or(0.0));
        }
    }
    if let (Some(a), Some(b)) = (start.cpu_seconds, end.cpu_seconds) {
        back("process_cpu_seconds_total".into(), a, b);
    }
    for (endpoint, buckets) in &start.latency {
        let was = buckets.last().map_or(0.0, |(_, c)| *c);
        let now = end.latency.get(endpoint).and_then(|b| b.last()).map_or(0.0, |(_, c)| *c);
        back(format!("requests of {endpoint}"), was, now);
    }
    reasons
}

/// The service's latency per endpoint between two scrapes: percentiles as bucket upper bounds.
pub fn latency_between(start: &MetricsSnapshot, end: &MetricsSnapshot) -> BTreeMap<String, ServerLatency> {
    let mut out = BTreeMap::new();
    for (endpoint, buckets) in &end.latency {
        let before = start.latency.get(endpoint);
        let delta: Vec<(f64, f64)> = buckets
            .iter()
            .map(|&(le, count)| {
                let was = before.and_then(|b| b.iter().find(|(l, _)| *l == le)).map_or(0.0, |(_, c)| *c);
                (le, (count - was).max(0.0))
            })
            .collect();
        let total = delta.last().map_or(0.0, |(_, c)| *c);
        if total < 1.0 {
            continue;
        }
        let quantile = |q: f64| delta.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| le * 1000.0);
        out.insert(
            endpoint.clone(),
            ServerLatency {
                count: total as u64,
                p50_ms: quantile(0.50).filter(|v| v.is_finite()),
                p95_ms: quantile(0.95).filter(|v| v.is_finite()),
                p99_ms: quantile(0.99).filter(|v| v.is_finite()),
            },
        );
    }
    out
}

/// One second's reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample1s {
    pub t_s: u32,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub own_cpu_cores: Option<f64>,
    pub own_rss_bytes: Option<u64>,
    pub machine_cpu_busy: Option<f64>,
    pub machine_memory_used: Option<u64>,
}

#[derive(Debug, Default)]
pub struct MonitorReport {
    pub start: Option<MetricsSnapshot>,
    pub end: Option<MetricsSnapshot>,
    pub samples: Vec<Sample1s>,
    /// Where the server's CPU and memory came from.
    pub source: &'static str,
    pub flamegraph: Option<PathBuf>,
    /// The folded stacks the flamegraph was drawn from.
    pub folded: Option<PathBuf>,
    /// The CPU profile as the service gave it, unnamed (see [`draw_profile`]).
    pub profile_addresses: Option<PathBuf>,
    pub flamegraph_note: Option<String>,
    /// Seconds into the steady state when the CPU profile's capture began and when it arrived (or the steady
    /// state ended), if one was asked for.
    pub profile_window: Option<(u32, u32)>,
    pub problems: Vec<String>,
    /// Why the figures cannot be trusted (see [`fwb_reports::Summary::invalid`]).
    pub invalid: Vec<String>,
    /// The memory limit of the service's cgroup, if it has one (read from its process).
    pub memory_limit: Option<u64>,
}

pub struct Monitor {
    pub api: Api,
    pub admin_key: String,
    pub service_pid: Option<u32>,
    pub out_dir: PathBuf,
    pub profile: bool,
}

impl Monitor {
    async fn scrape(&self) -> anyhow::Result<MetricsSnapshot> {
        let text = self
            .api
            .client
            .get(format!("{}/metrics", self.api.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        MetricsSnapshot::parse(&text)
    }

    /// Runs from now until the end of the steady state.
    pub async fn run(self, clock: Clock) -> MonitorReport {
        let mut report = MonitorReport::default();
        let profile = self.schedule_profile(&clock, &mut report);
        tokio::time::sleep_until(clock.steady_start.into()).await;
        match self.scrape().await {
            Ok(s) => report.start = Some(s),
            Err(e) => report.problems.push(format!("/metrics at the start of the steady state: {e}")),
        }
        self.sample(&clock, &mut report).await;
        match self.scrape().await {
            Ok(s) => report.end = Some(s),
            Err(e) => report.problems.push(format!("/metrics at the end of the steady state: {e}")),
        }
        if let (Some(a), Some(b)) = (&report.start, &report.end) {
            report.invalid.extend(counters_went_back(a, b));
        }
        self.collect_profile(profile, &clock, &mut report).await;
        report
    }

    /// Starts the task that takes the CPU profile over the middle of the steady state (up to 30 s, at most a
    /// third of it), and notes its window.
    fn schedule_profile(&self, clock: &Clock, report: &mut MonitorReport) -> Option<ProfileTask> {
        let steady = clock.steady_end.duration_since(clock.steady_start);
        let profile_secs = (steady.as_secs() / 3).min(30);
        if !self.profile || profile_secs < 1 {
            return None;
        }
        let at = clock.steady_start + steady / 2 - Duration::from_secs(profile_secs) / 2;
        let from = at.duration_since(clock.steady_start).as_secs() as u32;
        report.profile_window = Some((from, from + profile_secs as u32));
        let (api, key, dir) = (self.api.clone(), self.admin_key.clone(), self.out_dir.clone());
        Some(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let result = profile_to(&api, &key, profile_secs, &dir).await;
            (result, Instant::now())
        }))
    }

    /// Reads the service's, this process's and the machine's CPU and memory once a second until the steady
    /// state ends: from `/proc` when the service's pid is known, else from its `/metrics`.
    async fn sample(&self, clock: &Clock, report: &mut MonitorReport) {
        let pid = self.service_pid.map(Pid::from_u32);
        let own = Pid::from_u32(std::process::id());
        let mut system = match System::new_with_specifics(
            RefreshKind::nothing().with_cpu(sysinfo::CpuRefreshKind::nothing().with_usage()),
        ) {
            Ok(system) => system,
            Err(e) => {
                report.problems.push(format!("reading processes: {e}"));
                report.source = "none";
                return;
            }
        };
        let pids: Vec<Pid> = pid.into_iter().chain([own]).collect();
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        report.source = if pid.is_some() {
            "proc"
        } else if report.start.as_ref().is_some_and(|s| s.cpu_seconds.is_some()) {
            "metrics"
        } else {
            "none"
        };
        let mut last_metrics = report.start.clone().map(|s| (Instant::now(), s));
        let mut lost = 0u32;
        let mut tick =
            tokio::time::interval_at((clock.steady_start + Duration::from_secs(1)).into(), Duration::from_secs(1));
        loop {
            let now = tick.tick().await.into_std();
            if now > clock.steady_end {
                break;
            }
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
            system.refresh_cpu_usage();
            system.refresh_memory();
            let mut sample = Sample1s {
                t_s: now.duration_since(clock.steady_start).as_secs() as u32,
                machine_cpu_busy: Some(f64::from(system.global_cpu_usage()) / 100.0),
                machine_memory_used: Some(system.used_memory()),
                ..Sample1s::default()
            };
            if let Some(p) = system.process(own) {
                sample.own_cpu_cores = Some(f64::from(p.cpu_usage()) / 100.0);
                sample.own_rss_bytes = Some(p.memory());
            }
            let read = match pid {
                Some(pid) => match system.process(pid) {
                    Some(p) => {
                        sample.server_cpu_cores = Some(f64::from(p.cpu_usage()) / 100.0);
                        sample.server_rss_bytes = Some(p.memory());
                        if report.memory_limit.is_none() {
                            report.memory_limit = p.cgroup_limits().map(|l| l.total_memory);
                        }
                        true
                    }
                    None => false,
                },
                None if report.source == "metrics" => {
                    self.sample_metrics(clock, &mut last_metrics, &mut sample, &mut report.invalid).await
                }
                None => true,
            };
            lost += u32::from(!read);
            report.samples.push(sample);
        }
        if lost > 0 {
            report.invalid.push(format!(
                "{lost} of {} samples of the service's CPU and memory failed ({} gone or not answering)",
                report.samples.len(),
                if pid.is_some() { "its process" } else { "its /metrics" }
            ));
        }
    }

    /// The service's CPU (since the last scrape) and memory from its `/metrics`; `false` when it did not answer.
    async fn sample_metrics(
        &self,
        clock: &Clock,
        last: &mut Option<(Instant, MetricsSnapshot)>,
        sample: &mut Sample1s,
        invalid: &mut Vec<String>,
    ) -> bool {
        let Ok(snap) = self.scrape().await else { return false };
        let at = Instant::now();
        if let (Some((then, before)), Some(cpu)) = (&*last, snap.cpu_seconds) {
            let spent = cpu - before.cpu_seconds.unwrap_or(cpu);
            if spent < 0.0 || before.start_time != snap.start_time {
                invalid.push(format!(
                    "the service's CPU counter went back {:.1} s into the steady state (a restart?)",
                    at.duration_since(clock.steady_start).as_secs_f64()
                ));
            }
            sample.server_cpu_cores = Some(spent.max(0.0) / at.duration_since(*then).as_secs_f64());
        }
        sample.server_rss_bytes = snap.rss_bytes.map(|b| b as u64);
        *last = Some((at, snap));
        true
    }

    /// Waits for the profile, and notes where it is, when it really ended, or why there is none.
    async fn collect_profile(&self, profile: Option<ProfileTask>, clock: &Clock, report: &mut MonitorReport) {
        let note = |why: &dyn std::fmt::Display| Some(format!("no CPU profile: {why}"));
        match profile {
            Some(task) => match task.await {
                Ok((result, done)) => {
                    if let Some((from, _)) = report.profile_window {
                        let done = done.min(clock.steady_end).saturating_duration_since(clock.steady_start);
                        report.profile_window = Some((from, done.as_secs_f64().ceil() as u32));
                    }
                    match result {
                        Ok(addresses) => report.profile_addresses = Some(addresses),
                        Err(e) => report.flamegraph_note = note(&e),
                    }
                }
                Err(e) => report.flamegraph_note = note(&e),
            },
            None if !self.profile => report.flamegraph_note = Some("not asked for (--no-profile)".into()),
            None => report.flamegraph_note = Some("the steady state is too short for a CPU profile".into()),
        }
    }
}

/// The task taking the CPU profile: where its addresses went (or why not), and when it finished.
type ProfileTask = tokio::task::JoinHandle<(anyhow::Result<PathBuf>, Instant)>;

/// Takes the service's CPU profile as raw addresses into `dir/profile.addresses`: the service names nothing (naming
/// would cost it hundreds of MiB and a core for seconds, in the middle of the run). [`draw_profile`] names them
/// once the run is over.
async fn profile_to(api: &Api, key: &str, seconds: u64, dir: &Path) -> anyhow::Result<PathBuf> {
    let response = api
        .client
        .get(format!("{}/debug/pprof/profile?seconds={seconds}&format=addresses", api.base))
        .bearer_auth(key)
        .timeout(Duration::from_secs(seconds + 30))
        .send()
        .await?;
    if !response.status().is_success() {
        anyhow::bail!("/debug/pprof/profile answered {}", response.status());
    }
    let path = dir.join("profile.addresses");
    tokio::fs::write(&path, response.bytes().await?).await?;
    Ok(path)
}

/// After the run: names the profile's frames from the service's binary on disk into `profile.folded` and draws
/// `flamegraph.svg` from them, here rather than in the service.
pub async fn draw_profile(report: &mut MonitorReport) {
    let (Some(addresses), Some((from, to))) = (report.profile_addresses.clone(), report.profile_window) else {
        return;
    };
    let drawn = tokio::task::spawn_blocking(move || -> anyhow::Result<(PathBuf, PathBuf, usize, usize)> {
        let named = fwb_profiling::symbolize(&std::fs::read_to_string(&addresses)?)?;
        let dir = addresses.parent().unwrap_or(Path::new("."));
        let (svg_path, folded_path) = (dir.join("flamegraph.svg"), dir.join("profile.folded"));
        std::fs::write(&folded_path, &named.folded)?;
        let title = format!("the service's CPU over {} s of the steady state", to.saturating_sub(from));
        std::fs::write(&svg_path, fwb_reports::flame::render(&named.folded, &title).map_err(anyhow::Error::msg)?)?;
        Ok((svg_path, folded_path, named.unnamed, named.frames))
    })
    .await;
    match drawn {
        Ok(Ok((svg, folded, unnamed, frames))) => {
            report.flamegraph = Some(svg);
            report.folded = Some(folded);
            if unnamed * 10 > frames {
                report.problems.push(format!(
                    "{unnamed} of the CPU profile's {frames} distinct frames have no name (is the service's binary \
                     still where it ran from, with its symbols?)"
                ));
            }
        }
        Ok(Err(e)) => report.flamegraph_note = Some(format!("no CPU profile: naming its frames: {e}")),
        Err(e) => report.flamegraph_note = Some(format!("no CPU profile: naming its frames: {e}")),
    }
}

/// Mean and max of some readings.
pub fn process_figures(
    cpu: impl Iterator<Item = Option<f64>>,
    rss: impl Iterator<Item = Option<u64>>,
) -> ProcessFigures {
    let cpu: Vec<f64> = cpu.flatten().collect();
    let rss: Vec<u64> = rss.flatten().collect();
    ProcessFigures {
        cpu_cores_mean: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
        cpu_cores_max: cpu.iter().copied().reduce(f64::max),
        rss_bytes_mean: (!rss.is_empty()).then(|| rss.iter().sum::<u64>() / rss.len() as u64),
        rss_bytes_max: rss.iter().copied().max(),
    }
}

/// The used fraction of the filesystem holding `path`.
pub fn disk_used_fraction(path: &Path) -> Option<f64> {
    let path = path.canonicalize().ok()?;
    let disks = Disks::new_with_refreshed_list().ok()?;
    let disk =
        disks.iter().filter(|d| path.starts_with(d.mount_point())).max_by_key(|d| d.mount_point().as_os_str().len())?;
    let total = disk.total_space();
    (total > 0).then(|| (total - disk.available_space()) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE cache_hits_total counter
cache_hits_total{cache_type=\"file_meta\"} 10
cache_misses_total{cache_type=\"file_meta\"} 5
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{method=\"GET\",endpoint=\"/api/v1/files/{id}\",status=\"200\",le=\"0.001\"} 10
http_request_duration_seconds_bucket{method=\"GET\",endpoint=\"/api/v1/files/{id}\",status=\"200\",le=\"0.01\"} 10
http_request_duration_seconds_bucket{method=\"GET\",endpoint=\"/api/v1/files/{id}\",status=\"200\",le=\"+Inf\"} 10
http_request_duration_seconds_sum{method=\"GET\",endpoint=\"/api/v1/files/{id}\",status=\"200\"} 0.005
http_request_duration_seconds_count{method=\"GET\",endpoint=\"/api/v1/files/{id}\",status=\"200\"} 10
";

    #[test]
    fn hit_ratio_and_latency_cover_only_the_window() {
        let start = MetricsSnapshot::parse(BEFORE).unwrap();
        let after = BEFORE
            .replace("} 10\ncache_misses", "} 100\ncache_misses")
            .replace("cache_type=\"file_meta\"} 5", "cache_type=\"file_meta\"} 15")
            .replace("le=\"0.001\"} 10", "le=\"0.001\"} 20")
            .replace("le=\"0.01\"} 10", "le=\"0.01\"} 110")
            .replace("le=\"+Inf\"} 10", "le=\"+Inf\"} 110");
        let end = MetricsSnapshot::parse(&after).unwrap();
        let cache = cache_between(&start, &end);
        assert_eq!((cache.total.hits, cache.total.misses), (90, 10));
        assert_eq!(cache.families["file_meta"].ratio, Some(0.9));
        let latency = latency_between(&start, &end);
        let meta = latency["GET /api/v1/files/{id}"];
        assert_eq!(meta.count, 100);
        assert_eq!(meta.p50_ms, Some(10.0));
    }

    #[test]
    fn a_counter_that_went_back_makes_the_run_invalid_instead_of_a_perfect_ratio() {
        let start = MetricsSnapshot::parse(&format!("{BEFORE}process_start_time_seconds 1000\n")).unwrap();
        // A restart between the scrapes: misses back to 0, hits to 3, so a clamped delta reads 100 % hits.
        let restarted = BEFORE
            .replace("cache_type=\"file_meta\"} 10", "cache_type=\"file_meta\"} 3")
            .replace("cache_type=\"file_meta\"} 5", "cache_type=\"file_meta\"} 0");
        let end = MetricsSnapshot::parse(&format!("{restarted}process_start_time_seconds 1090\n")).unwrap();
        let reasons = counters_went_back(&start, &end);
        assert!(reasons.iter().any(|r| r.contains("restarted")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("cache misses of file_meta went back")), "{reasons:?}");
        assert!(counters_went_back(&start, &start).is_empty());
    }

    #[test]
    fn label_values_may_hold_braces_commas_and_escapes() {
        let s = parse_sample(r#"x_bucket{a="/f/{id}",b="1,2",c="q\"\\",le="+Inf"} 7 1700000000"#).unwrap();
        assert_eq!(s.name, "x_bucket");
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels, [("a", "/f/{id}"), ("b", "1,2"), ("c", "q\"\\"), ("le", "+Inf")]);
        assert_eq!(s.value, 7.0);
        assert_eq!(parse_sample("up 1").unwrap().value, 1.0);
        assert!(parse_sample("broken{a=1} 2").is_none());
    }
}
