//! The gate: each target of a run's scenario, and each figure against a baseline run, to pass or fail.
//! A pure function of two summaries.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::{Class, Summary};

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
                "FAIL {} regressed: {} against {} in the baseline ({:+.1} %, tolerance {:.0} %)",
                d.name,
                show(Some(d.current), &d.unit),
                show(Some(d.baseline), &d.unit),
                d.relative * 100.0,
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
                };
                let _ = writeln!(
                    out,
                    "{:<34} {:>12} {:>12} {:>8.1}%  {result}",
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
        checks.push(check("cache hit ratio".into(), run.cache.total.ratio, Bound::AtLeast, min, "%"));
    }
    let mut achieved = check(
        "achieved rate / target".into(),
        Some(run.rate.achieved_fraction),
        Bound::AtLeast,
        t.min_achieved_rate,
        "%",
    );
    if achieved.outcome == Outcome::Fail {
        achieved.hint = Some(format!(
            "the load generator, not the service, may be the limit: it used {} cores with the machine {} busy",
            run.loadtest.cpu_cores_mean.map_or("?".to_owned(), |c| format!("{c:.2}")),
            run.machine.cpu_busy_mean.map_or("?".to_owned(), |b| format!("{:.0} %", b * 100.0)),
        ));
    }
    checks.push(achieved);
    if let Some(max) = t.max_service_cpu {
        checks.push(check(
            "service CPU (mean, of all cores)".into(),
            run.server.cpu_fraction_mean,
            Bound::AtMost,
            max,
            "%",
        ));
    }
    if let Some(max) = t.max_service_memory {
        checks.push(check(
            "service memory (max, of RAM)".into(),
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

    let (deltas, baseline_note) = match baseline {
        None => (Vec::new(), None),
        Some(base) => compare(run, base),
    };
    let passed =
        checks.iter().all(|c| c.outcome == Outcome::Pass) && deltas.iter().all(|d| d.change != Change::Regressed);
    Verdict { passed, checks, deltas, baseline_note }
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
        if now.count == 0 || then.count == 0 || then.corrected.p95_ms <= 0.0 {
            continue;
        }
        let mut d =
            delta(format!("{class} p95 latency"), then.corrected.p95_ms, now.corrected.p95_ms, tol.p95, "ms", true);
        if (now.corrected.p95_ms - then.corrected.p95_ms).abs() < tol.p95_slack_ms {
            d.change = Change::Steady;
        }
        deltas.push(d);
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
    (deltas, note)
}

/// `higher_is_worse`: latency; otherwise (throughput) lower is worse.
fn delta(name: String, baseline: f64, current: f64, tolerance: f64, unit: &str, higher_is_worse: bool) -> Delta {
    let relative = current / baseline - 1.0;
    let worse = if higher_is_worse { relative } else { -relative };
    let change = if worse > tolerance {
        Change::Regressed
    } else if worse < -tolerance {
        Change::Improved
    } else {
        Change::Steady
    };
    Delta { name, baseline, current, relative, tolerance, unit: unit.to_owned(), change }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::*;

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
            error_rate: 0.0,
            corrected: p,
            sent: p,
            corrected_curve: vec![],
            sent_curve: vec![],
            status: BTreeMap::new(),
            top_errors: vec![],
            shedding: None,
        }
    }

    /// A run that meets every target of the seed's peak.
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
                error_rate: 0.0001,
            },
            classes: [(Class::Api, stats(Class::Api, 40.0)), (Class::Download, stats(Class::Download, 300.0))].into(),
            requests: BTreeMap::new(),
            cache: CacheFigures { families: BTreeMap::new(), total: CacheFamily::new(90, 10) },
            server: ServerFigures {
                source: "proc".into(),
                cpu_fraction_mean: Some(0.5),
                memory_fraction_max: Some(0.1),
                rss_growth_mib_per_10min: Some(0.2),
                ..ServerFigures::default()
            },
            loadtest: ProcessFigures::default(),
            machine: MachineFigures::default(),
            timeline: vec![],
            targets: Targets {
                p95_ms: [(Class::Api, 100.0), (Class::Download, 1000.0)].into(),
                max_error_rate: 0.001,
                min_cache_hit_ratio: Some(0.8),
                min_achieved_rate: 0.95,
                max_service_cpu: Some(0.8),
                max_service_memory: Some(0.8),
                max_rss_growth_mib_per_10min: Some(1.0),
                tolerance: Some(Tolerance { p95: 0.15, throughput: 0.10, p95_slack_ms: 0.0 }),
            },
            artifacts: Artifacts::default(),
        }
    }

    fn outcome(v: &Verdict, name: &str) -> Outcome {
        v.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}")).outcome
    }

    #[test]
    fn a_run_within_every_target_passes() {
        let v = judge(&passing(), None);
        assert!(v.passed, "{}", v.table());
        assert_eq!(v.checks.len(), 8);
        assert!(v.failures().is_empty());
    }

    #[test]
    fn each_target_fails_on_its_own() {
        type Break = fn(&mut Summary);
        let cases: [(&str, Break); 7] = [
            ("api p95 latency", |s| s.classes.get_mut(&Class::Api).unwrap().corrected.p95_ms = 100.5),
            ("error rate", |s| s.rate.error_rate = 0.0011),
            ("cache hit ratio", |s| s.cache.total = CacheFamily::new(79, 21)),
            ("achieved rate / target", |s| s.rate.achieved_fraction = 0.9),
            ("service CPU (mean, of all cores)", |s| s.server.cpu_fraction_mean = Some(0.81)),
            ("service memory (max, of RAM)", |s| s.server.memory_fraction_max = Some(0.9)),
            ("service memory growth (MiB per 10 min)", |s| s.server.rss_growth_mib_per_10min = Some(1.5)),
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
    fn a_missed_rate_says_the_load_generator_may_be_the_limit() {
        let mut s = passing();
        s.rate.achieved_fraction = 0.5;
        let failures = judge(&s, None).failures();
        assert!(failures[0].contains("the load generator, not the service, may be the limit"), "{failures:?}");
    }

    #[test]
    fn a_figure_not_measured_fails() {
        let mut s = passing();
        s.classes.remove(&Class::Download);
        s.cache.total = CacheFamily::new(0, 0);
        s.server.cpu_fraction_mean = None;
        let v = judge(&s, None);
        assert!(!v.passed);
        for name in ["download p95 latency", "cache hit ratio", "service CPU (mean, of all cores)"] {
            assert_eq!(outcome(&v, name), Outcome::Missing, "{name}");
        }
        assert!(v.failures().iter().any(|f| f == "FAIL cache hit ratio: not measured"));
    }

    #[test]
    fn a_regression_beyond_the_tolerance_fails_and_within_it_does_not() {
        let baseline = passing();
        let mut run = passing();
        run.classes.get_mut(&Class::Api).unwrap().corrected.p95_ms = 40.0 * 1.14;
        assert!(judge(&run, Some(&baseline)).passed, "14 % is within 15 %");
        run.classes.get_mut(&Class::Api).unwrap().corrected.p95_ms = 40.0 * 1.16;
        let v = judge(&run, Some(&baseline));
        assert!(!v.passed);
        let failures = v.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("FAIL api p95 latency regressed"), "{failures:?}");

        let mut slower = passing();
        slower.rate.achieved_rps = 998.0 * 0.89;
        let v = judge(&slower, Some(&baseline));
        assert_eq!(v.deltas.iter().find(|d| d.name == "throughput").unwrap().change, Change::Regressed);
    }

    #[test]
    fn a_change_within_the_slack_is_steady_however_large_in_percent() {
        let baseline = passing();
        let mut run = passing();
        run.targets.tolerance = Some(Tolerance { p95: 0.15, throughput: 0.10, p95_slack_ms: 10.0 });
        run.classes.get_mut(&Class::Api).unwrap().corrected.p95_ms = 40.0 + 9.0;
        let v = judge(&run, Some(&baseline));
        assert!(v.passed, "{}", v.table());
        assert_eq!(v.deltas[0].change, Change::Steady);
        run.classes.get_mut(&Class::Api).unwrap().corrected.p95_ms = 40.0 + 11.0;
        assert!(!judge(&run, Some(&baseline)).passed);
    }

    #[test]
    fn improvements_are_shown_and_pass() {
        let baseline = passing();
        let mut run = passing();
        run.classes.get_mut(&Class::Download).unwrap().corrected.p95_ms = 150.0;
        let v = judge(&run, Some(&baseline));
        assert!(v.passed);
        let d = v.deltas.iter().find(|d| d.name == "download p95 latency").unwrap();
        assert_eq!(d.change, Change::Improved);
        assert!((d.relative + 0.5).abs() < 1e-9);
        assert!(v.table().contains("improved"));
    }
}
