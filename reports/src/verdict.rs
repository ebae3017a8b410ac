//! The gate: each target of a run's scenario, and each figure against a baseline run, to pass or fail.
//! A pure function of two summaries.
//!
//! Latency is compared on the runs' windows ([`crate::stats`]): a class regressed when the median of its
//! per-window p95s grew beyond the tolerance with 95 % confidence, so a doubled 5 ms p95 fails and an
//! unchanged build on a noisy machine passes. Throughput and CPU per request are single figures per run,
//! compared with their own tolerance.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::stats::{self, RatioEstimate};
use crate::{Class, DATA_FAMILIES, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// The figure was not measured: the gate cannot say it passed, so it fails.
    Missing,
}

/// Which side of the limit passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost,
    AtLeast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub measured: Option<f64>,
    pub bound: Bound,
    pub limit: f64,
    /// `ms` or `%` (fractions are shown as percentages).
    pub unit: String,
    pub outcome: Outcome,
    /// What a failure may mean.
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Regressed,
    Improved,
    /// Within the tolerance either way.
    Steady,
    /// Too few windows to say with confidence; never fails.
    Inconclusive,
}

/// One figure of this run beside the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub name: String,
    pub baseline: f64,
    pub current: f64,
    /// `current / baseline - 1`.
    pub relative: f64,
    /// How far it may move the wrong way before it counts as a regression.
    pub tolerance: f64,
    pub unit: String,
    pub change: Change,
    /// For a statistical comparison: the one-sided 95 % bounds of `relative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    pub checks: Vec<Check>,
    pub deltas: Vec<Delta>,
    /// Why there are no deltas, when a baseline was given but could not be compared.
    pub baseline_note: Option<String>,
}

impl Verdict {
    /// One line per failed check or regression, for a terminal or a CI log.
    pub fn failures(&self) -> Vec<String> {
        let checks = self.checks.iter().filter(|c| c.outcome != Outcome::Pass).map(|c| match c.outcome {
            Outcome::Missing => format!("FAIL {}: not measured", c.name),
            _ => format!(
                "FAIL {}: {} {} {}{}",
                c.name,
                show(c.measured, &c.unit),
                if c.bound == Bound::AtMost { "above the limit of" } else { "below the minimum of" },
                show(Some(c.limit), &c.unit),
                c.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
            ),
        });
        let deltas = self.deltas.iter().filter(|d| d.change == Change::Regressed).map(|d| {
            format!(
                "FAIL {} regressed: {} against {} in the baseline ({:+.1} %{}, tolerance {:.0} %)",
                d.name,
                show(Some(d.current), &d.unit),
                show(Some(d.baseline), &d.unit),
                d.relative * 100.0,
                d.bounds
                    .map(|(low, _)| format!(", at least {:+.1} % with 95 % confidence", low * 100.0))
                    .unwrap_or_default(),
                d.tolerance * 100.0
            )
        });
        checks.chain(deltas).collect()
    }

    /// The checks and deltas as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<34} {:>12} {:>16}  result", "check", "measured", "limit");
        for c in &self.checks {
            let limit =
                format!("{} {}", if c.bound == Bound::AtMost { "<=" } else { ">=" }, show(Some(c.limit), &c.unit));
            let result = match c.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Missing => "FAIL (not measured)",
            };
            let _ = writeln!(out, "{:<34} {:>12} {:>16}  {result}", c.name, show(c.measured, &c.unit), limit);
        }
        if !self.deltas.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<34} {:>12} {:>12} {:>9}  result",
                "against the baseline", "baseline", "this run", "change"
            );
            for d in &self.deltas {
                let result = match d.change {
                    Change::Regressed => "FAIL (regressed)",
                    Change::Improved => "improved",
                    Change::Steady => "steady",
                    Change::Inconclusive => "inconclusive (too few windows)",
                };
                let bounds = d
                    .bounds
                    .map(|(low, high)| format!(" [{:+.1}, {:+.1}]", low * 100.0, high * 100.0))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:<34} {:>12} {:>12} {:>8.1}%{bounds}  {result}",
                    d.name,
                    show(Some(d.baseline), &d.unit),
                    show(Some(d.current), &d.unit),
                    d.relative * 100.0
                );
            }
        }
        if let Some(note) = &self.baseline_note {
            let _ = writeln!(out, "\nbaseline: {note}");
        }
        let _ = writeln!(out, "\nverdict: {}", if self.passed { "PASS" } else { "FAIL" });
        out
    }
}

fn show(value: Option<f64>, unit: &str) -> String {
    match (value, unit) {
        (None, _) => "-".to_owned(),
        (Some(v), "%") => format!("{:.2} %", v * 100.0),
        (Some(v), "req/s") => format!("{v:.1} req/s"),
        (Some(v), "count") => format!("{v:.0}"),
        (Some(v), unit) => format!("{v:.2} {unit}"),
    }
}

fn check(name: String, measured: Option<f64>, bound: Bound, limit: f64, unit: &str) -> Check {
    let outcome = match measured {
        None => Outcome::Missing,
        Some(m) if m.is_nan() => Outcome::Missing,
        Some(m) => {
            let ok = match bound {
                Bound::AtMost => m <= limit,
                Bound::AtLeast => m >= limit,
            };
            if ok { Outcome::Pass } else { Outcome::Fail }
        }
    };
    Check { name, measured, bound, limit, unit: unit.to_owned(), outcome, hint: None }
}

/// Judges `run` against its own targets and, when given, against `baseline` with the targets' tolerance.
pub fn judge(run: &Summary, baseline: Option<&Summary>) -> Verdict {
    let t = &run.targets;
    let mut checks = Vec::new();
    for (class, limit) in &t.p95_ms {
        let measured = run.classes.get(class).filter(|s| s.count > 0).map(|s| s.corrected.p95_ms);
        checks.push(check(format!("{class} p95 latency"), measured, Bound::AtMost, *limit, "ms"));
    }
    checks.push(check("error rate".into(), Some(run.rate.error_rate), Bound::AtMost, t.max_error_rate, "%"));
    if let Some(min) = t.min_cache_hit_ratio {
        let mut cache = check("cache hit ratio (data families)".into(), run.cache.data.ratio, Bound::AtLeast, min, "%");
        if cache.outcome != Outcome::Pass {
            cache.hint = Some(format!("over {}; the permission cache is not counted", DATA_FAMILIES.join(", ")));
        }
        checks.push(cache);
    }
    let mut achieved = check(
        "succeeded rate / target".into(),
        Some(run.rate.achieved_fraction),
        Bound::AtLeast,
        t.min_achieved_rate,
        "%",
    );
    if achieved.outcome == Outcome::Fail {
        achieved.hint = Some(rate_hint(run));
    }
    checks.push(achieved);
    if let Some(max) = t.max_service_cpu {
        checks.push(check(
            format!("service CPU (mean, of {} cores)", run.machine.cores),
            run.server.cpu_fraction_mean,
            Bound::AtMost,
            max,
            "%",
        ));
    }
    if let Some(max) = t.max_service_memory {
        checks.push(check(
            format!("service memory (max, of {})", run.machine.service_memory_of()),
            run.server.memory_fraction_max,
            Bound::AtMost,
            max,
            "%",
        ));
    }

    if let Some(max) = t.max_rss_growth_mib_per_10min {
        checks.push(check(
            "service memory growth (MiB per 10 min)".into(),
            run.server.rss_growth_mib_per_10min,
            Bound::AtMost,
            max,
            "MiB",
        ));
    }

    let mut valid =
        check("run validity (reasons it is not)".into(), Some(run.invalid.len() as f64), Bound::AtMost, 0.0, "count");
    if !run.invalid.is_empty() {
        valid.hint = Some(run.invalid.join("; "));
    }
    checks.push(valid);

    let (deltas, baseline_note) = match baseline {
        None => (Vec::new(), None),
        Some(base) => compare(run, base),
    };
    let passed =
        checks.iter().all(|c| c.outcome == Outcome::Pass) && deltas.iter().all(|d| d.change != Change::Regressed);
    Verdict { passed, checks, deltas, baseline_note }
}

/// Why fewer requests succeeded than were due: the load generator when it was late or short of CPU, the
/// service otherwise.
fn rate_hint(run: &Summary) -> String {
    /// Wake-ups this late (p99) mean the load generator could not keep its own schedule.
    const LATE_MS: f64 = 5.0;
    let cores = run.loadtest.cpu_cores_mean;
    let late = run.pacing.map(|p| p.p99_ms);
    let busy_generator = cores.is_some_and(|c| c >= 0.8 * run.machine.cores.max(1) as f64 / 2.0);
    if late.is_some_and(|l| l > LATE_MS) || busy_generator {
        format!(
            "the load generator may be the limit: its wake-ups were {} late (p99) and it used {} cores",
            late.map_or("?".to_owned(), |l| format!("{l:.1} ms")),
            cores.map_or("?".to_owned(), |c| format!("{c:.2}")),
        )
    } else {
        format!(
            "the service was the limit: {} requests failed and {} were never sent while their users waited on it; \
             the load generator kept its schedule ({} late at p99)",
            run.rate.errors,
            run.rate.missed,
            late.map_or("?".to_owned(), |l| format!("{l:.2} ms")),
        )
    }
}

fn compare(run: &Summary, base: &Summary) -> (Vec<Delta>, Option<String>) {
    let Some(tol) = run.targets.tolerance else {
        return (Vec::new(), Some("the scenario sets no [targets.tolerance]; nothing compared".into()));
    };
    let mut note = None;
    if base.run.scenario != run.run.scenario {
        note = Some(format!("the baseline ran scenario {:?}, this run {:?}", base.run.scenario, run.run.scenario));
    }
    let mut deltas = Vec::new();
    for class in Class::ALL {
        let (Some(now), Some(then)) = (run.classes.get(&class), base.classes.get(&class)) else { continue };
        if now.count == 0 || then.count == 0 {
            continue;
        }
        let name = format!("{class} p95 latency (median of windows)");
        deltas.push(match stats::median_ratio(&then.p95_windows_ms, &now.p95_windows_ms) {
            Some(estimate) => windowed(name, estimate, tol.p95),
            None => Delta {
                change: Change::Inconclusive,
                ..delta(name, then.corrected.p95_ms, now.corrected.p95_ms, tol.p95, "ms", true)
            },
        });
    }
    if base.rate.achieved_rps > 0.0 {
        deltas.push(delta(
            "throughput".into(),
            base.rate.achieved_rps,
            run.rate.achieved_rps,
            tol.throughput,
            "req/s",
            false,
        ));
    }
    if let (Some(tolerance), Some(then), Some(now)) =
        (tol.cpu_per_request, base.server.cpu_us_per_request, run.server.cpu_us_per_request)
        && then > 0.0
    {
        deltas.push(delta("service CPU per request".into(), then, now, tolerance, "µs", true));
    }
    (deltas, note)
}

/// A latency comparison on windows: regressed only when even the low bound is beyond the tolerance.
fn windowed(name: String, e: RatioEstimate, tolerance: f64) -> Delta {
    let bounds = (e.low - 1.0, e.high - 1.0);
    Delta {
        name,
        baseline: e.baseline_median,
        current: e.current_median,
        relative: e.ratio - 1.0,
        tolerance,
        unit: "ms".to_owned(),
        change: classify(bounds.0, bounds.1, tolerance),
        bounds: Some(bounds),
    }
}

/// `higher_is_worse`: latency; otherwise (throughput) lower is worse.
fn delta(name: String, baseline: f64, current: f64, tolerance: f64, unit: &str, higher_is_worse: bool) -> Delta {
    let relative = current / baseline - 1.0;
    let worse = if higher_is_worse { relative } else { -relative };
    let change = classify(worse, worse, tolerance);
    Delta { name, baseline, current, relative, tolerance, unit: unit.to_owned(), change, bounds: None }
}

/// How a figure moved, from the least and the most it may have grown (the same for a single figure, the bounds of
/// an estimate otherwise): regressed when even the least is beyond the tolerance, improved when even the most is
/// below its negative.
pub(crate) fn classify(least_growth: f64, most_growth: f64, tolerance: f64) -> Change {
    if least_growth > tolerance {
        Change::Regressed
    } else if most_growth < -tolerance {
        Change::Improved
    } else {
        Change::Steady
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::*;

    /// Thirty windows around `p95` (±10 %), as a steady run gives.
    fn windows(p95: f64) -> Vec<f64> {
        (0..30).map(|i| p95 * (0.9 + 0.2 * f64::from((i * 7) % 30) / 29.0)).collect()
    }

    fn stats(class: Class, p95: f64) -> RequestStats {
        let p = Percentiles {
            p50_ms: p95 / 2.0,
            p90_ms: p95,
            p95_ms: p95,
            p99_ms: p95 * 2.0,
            max_ms: p95 * 3.0,
            mean_ms: p95 / 2.0,
        };
        RequestStats {
            class,
            count: 1000,
            errors: 0,
            missed: 0,
            error_rate: 0.0,
            corrected: p,
            sent: p,
            corrected_curve: vec![],
            sent_curve: vec![],
            status: BTreeMap::new(),
            top_errors: vec![],
            shedding: None,
            p95_windows_ms: windows(p95),
        }
    }

    fn scale_windows(s: &mut Summary, class: Class, factor: f64) {
        let stats = s.classes.get_mut(&class).unwrap();
        stats.corrected.p95_ms *= factor;
        stats.p95_windows_ms.iter_mut().for_each(|w| *w *= factor);
    }

    /// A run that meets every target of the performance guide's peak.
    fn passing() -> Summary {
        let now = chrono::Utc::now();
        Summary {
            schema_version: SCHEMA_VERSION,
            run: RunMeta {
                git_revision: None,
                git_dirty: None,
                scenario: "peak".into(),
                scenario_file: "scenarios/peak.toml".into(),
                scenario_hash: String::new(),
                target_url: "http://127.0.0.1:1".into(),
                backend: "embedded".into(),
                cores: 2,
                memory_bytes: 1 << 30,
                started_at: now,
                steady_started_at: now,
                ended_at: now,
                users: 1000,
                steady_seconds: 120.0,
            },
            rate: RateFigures {
                target_rps: 1000.0,
                achieved_rps: 998.0,
                achieved_fraction: 0.998,
                requests: 119_760,
                errors: 12,
                missed: 0,
                error_rate: 0.0001,
            },
            classes: [(Class::Api, stats(Class::Api, 40.0)), (Class::Download, stats(Class::Download, 300.0))].into(),
            requests: BTreeMap::new(),
            cache: CacheFigures::from_families(
                [
                    ("file_meta".to_owned(), CacheFamily::new(90, 10)),
                    ("user_perm".to_owned(), CacheFamily::new(100, 0)),
                ]
                .into(),
            ),
            server: ServerFigures {
                source: "proc".into(),
                cpu_fraction_mean: Some(0.5),
                memory_fraction_max: Some(0.1),
                rss_growth_mib_per_10min: Some(0.2),
                profiler: None,
                cpu_us_per_request: Some(400.0),
                ..ServerFigures::default()
            },
            loadtest: ProcessFigures::default(),
            machine: MachineFigures { cores: 2, ..MachineFigures::default() },
            timeline: vec![],
            targets: Targets {
                p95_ms: [(Class::Api, 100.0), (Class::Download, 1000.0)].into(),
                max_error_rate: 0.001,
                min_cache_hit_ratio: Some(0.8),
                min_achieved_rate: 0.95,
                max_service_cpu: Some(0.8),
                max_service_memory: Some(0.8),
                max_rss_growth_mib_per_10min: Some(1.0),
                tolerance: Some(Tolerance { p95: 0.15, throughput: 0.10, cpu_per_request: Some(0.05), capacity: None }),
            },
            artifacts: Artifacts::default(),
            pacing: Some(Percentiles { p50_ms: 0.05, p99_ms: 0.4, ..Percentiles::default() }),
            invalid: vec![],
        }
    }

    fn outcome(v: &Verdict, name: &str) -> Outcome {
        v.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}")).outcome
    }

    fn change(v: &Verdict, name: &str) -> Change {
        v.deltas.iter().find(|d| d.name.starts_with(name)).unwrap_or_else(|| panic!("no delta {name}")).change
    }

    #[test]
    fn a_run_within_every_target_passes() {
        let v = judge(&passing(), None);
        assert!(v.passed, "{}", v.table());
        assert_eq!(v.checks.len(), 9);
        assert!(v.failures().is_empty());
    }

    #[test]
    fn each_target_fails_on_its_own() {
        type Break = fn(&mut Summary);
        let cases: [(&str, Break); 8] = [
            ("api p95 latency", |s| s.classes.get_mut(&Class::Api).unwrap().corrected.p95_ms = 100.5),
            ("error rate", |s| s.rate.error_rate = 0.0011),
            ("cache hit ratio (data families)", |s| {
                s.cache = CacheFigures::from_families([("file_meta".to_owned(), CacheFamily::new(79, 21))].into())
            }),
            ("succeeded rate / target", |s| s.rate.achieved_fraction = 0.9),
            ("service CPU (mean, of 2 cores)", |s| s.server.cpu_fraction_mean = Some(0.81)),
            ("service memory (max, of RAM)", |s| s.server.memory_fraction_max = Some(0.9)),
            ("service memory growth (MiB per 10 min)", |s| s.server.rss_growth_mib_per_10min = Some(1.5)),
            ("run validity (reasons it is not)", |s| s.invalid.push("cache counters went back".into())),
        ];
        for (name, break_it) in cases {
            let mut s = passing();
            break_it(&mut s);
            let v = judge(&s, None);
            assert!(!v.passed, "{name}");
            assert_eq!(outcome(&v, name), Outcome::Fail, "{name}");
            let failures = v.failures();
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(failures[0].contains(name), "{failures:?}");
        }
    }

    #[test]
    fn service_memory_is_a_fraction_of_its_cgroups_limit_when_that_is_lower() {
        let gib = 1u64 << 30;
        let mut machine = MachineFigures { cores: 2, memory_bytes: 24 * gib, ..MachineFigures::default() };
        assert_eq!((machine.service_memory_bytes(), machine.service_memory_of()), (24 * gib, "RAM"));
        machine.service_memory_limit_bytes = Some(gib);
        assert_eq!((machine.service_memory_bytes(), machine.service_memory_of()), (gib, "its cgroup's limit"));
        let mut s = passing();
        s.machine = machine;
        s.server.memory_fraction_max = Some(0.9);
        assert_eq!(outcome(&judge(&s, None), "service memory (max, of its cgroup's limit)"), Outcome::Fail);
    }

    #[test]
    fn the_permission_cache_does_not_lift_the_data_hit_ratio() {
        // Data families hit 64 %; with the permission cache hitting always, the total is above 80 %.
        let mut s = passing();
        s.cache = CacheFigures::from_families(
            [
                ("file_meta".to_owned(), CacheFamily::new(40, 20)),
                ("file_content".to_owned(), CacheFamily::new(24, 16)),
                ("user_perm".to_owned(), CacheFamily::new(100, 0)),
            ]
            .into(),
        );
        assert!(s.cache.total.ratio.unwrap() >= 0.8);
        assert!((s.cache.data.ratio.unwrap() - 0.64).abs() < 1e-9);
        let v = judge(&s, None);
        assert_eq!(outcome(&v, "cache hit ratio (data families)"), Outcome::Fail);
    }

    #[test]
    fn a_missed_rate_blames_whoever_was_late() {
        let mut s = passing();
        s.rate.achieved_fraction = 0.5;
        s.rate.missed = 5000;
        let failures = judge(&s, None).failures();
        assert!(failures[0].contains("the service was the limit"), "{failures:?}");
        assert!(failures[0].contains("5000 were never sent"), "{failures:?}");
        // Wake-ups 5 ms late at p99 are still the load generator keeping its schedule; past that they are not.
        s.pacing = Some(Percentiles { p99_ms: 5.0, ..Percentiles::default() });
        assert!(judge(&s, None).failures()[0].contains("the service was the limit"));
        s.pacing = Some(Percentiles { p99_ms: 5.1, ..Percentiles::default() });
        let failures = judge(&s, None).failures();
        assert!(failures[0].contains("the load generator may be the limit"), "{failures:?}");
    }

    #[test]
    fn a_figure_not_measured_fails() {
        let mut s = passing();
        s.classes.remove(&Class::Download);
        s.cache = CacheFigures::from_families([("user_perm".to_owned(), CacheFamily::new(10, 0))].into());
        s.server.cpu_fraction_mean = None;
        let v = judge(&s, None);
        assert!(!v.passed);
        for name in ["download p95 latency", "cache hit ratio (data families)", "service CPU (mean, of 2 cores)"] {
            assert_eq!(outcome(&v, name), Outcome::Missing, "{name}");
        }
        assert!(v.failures().iter().any(|f| f == "FAIL cache hit ratio (data families): not measured"));
    }

    #[test]
    fn a_doubled_5_ms_p95_fails_however_small_in_milliseconds() {
        let mut baseline = passing();
        baseline.classes.insert(Class::Api, stats(Class::Api, 5.0));
        let mut run = baseline.clone();
        scale_windows(&mut run, Class::Api, 2.0);
        // The test's tolerance and the shipped scenarios' (50 %, the CI machine's run-to-run noise).
        for p95 in [0.15, 0.50] {
            run.targets.tolerance.as_mut().unwrap().p95 = p95;
            let v = judge(&run, Some(&baseline));
            assert!(!v.passed, "{}", v.table());
            let failures = v.failures();
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(failures[0].starts_with("FAIL api p95 latency (median of windows) regressed"), "{failures:?}");
            assert!(failures[0].contains("with 95 % confidence"), "{failures:?}");
        }
    }

    #[test]
    fn an_unchanged_run_with_noisy_windows_passes() {
        let baseline = passing();
        let mut run = passing();
        // The same distribution in another order, one window stalled at ten times the rest.
        let api = run.classes.get_mut(&Class::Api).unwrap();
        api.p95_windows_ms.reverse();
        api.p95_windows_ms[3] *= 10.0;
        let v = judge(&run, Some(&baseline));
        assert!(v.passed, "{}", v.table());
        assert_eq!(change(&v, "api p95"), Change::Steady);
    }

    #[test]
    fn a_latency_regression_within_the_noise_is_not_called() {
        let baseline = passing();
        let mut run = passing();
        scale_windows(&mut run, Class::Api, 1.10);
        assert_eq!(change(&judge(&run, Some(&baseline)), "api p95"), Change::Steady);
        scale_windows(&mut run, Class::Api, 1.5 / 1.1);
        assert_eq!(change(&judge(&run, Some(&baseline)), "api p95"), Change::Regressed);
    }

    #[test]
    fn too_few_windows_are_inconclusive_and_pass() {
        let baseline = passing();
        let mut run = passing();
        scale_windows(&mut run, Class::Api, 2.0);
        run.classes.get_mut(&Class::Api).unwrap().p95_windows_ms.truncate(stats::MIN_WINDOWS - 1);
        let v = judge(&run, Some(&baseline));
        assert_eq!(change(&v, "api p95"), Change::Inconclusive);
        assert!(v.passed, "{}", v.table());
    }

    #[test]
    fn throughput_and_cpu_per_request_regress_beyond_their_tolerance() {
        let baseline = passing();
        let mut slower = passing();
        slower.rate.achieved_rps = 998.0 * 0.89;
        assert_eq!(change(&judge(&slower, Some(&baseline)), "throughput"), Change::Regressed);

        let mut costlier = passing();
        costlier.server.cpu_us_per_request = Some(400.0 * 1.04);
        assert_eq!(change(&judge(&costlier, Some(&baseline)), "service CPU per request"), Change::Steady);
        costlier.server.cpu_us_per_request = Some(400.0 * 1.06);
        let v = judge(&costlier, Some(&baseline));
        assert!(!v.passed);
        assert_eq!(change(&v, "service CPU per request"), Change::Regressed);
    }

    #[test]
    fn improvements_are_shown_and_pass() {
        let baseline = passing();
        let mut run = passing();
        scale_windows(&mut run, Class::Download, 0.5);
        let v = judge(&run, Some(&baseline));
        assert!(v.passed);
        let d = v.deltas.iter().find(|d| d.name.starts_with("download p95")).unwrap();
        assert_eq!(d.change, Change::Improved);
        assert!((d.relative + 0.5).abs() < 0.05, "{d:?}");
        assert!(v.table().contains("improved"));
    }
}
