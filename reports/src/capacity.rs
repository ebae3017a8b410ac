//! Capacity: the highest rate a deployment holds with every target of its scenario met, found by stepping the
//! scenario's rate up against one service on one data set (`cargo xtask perf --find-capacity`), and its
//! comparison with a baseline.
//!
//! The search multiplies the rate by [`Search::factor`] while steps pass; after the first failure it tries the
//! geometric middle of the highest rate held and the lowest failed, [`Search::refinements`] times. With the
//! defaults (×1.5, two refinements) the capacity is known to within a factor of 1.5^(1/4) ≈ 1.11, so a
//! tolerance below ~11 % would judge the search's resolution, not the service.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::verdict::{Change, Outcome, Verdict};
use crate::{Class, Summary};

/// The version of [`Capacity`]'s schema.
pub const SCHEMA_VERSION: u32 = 2;

/// How far the capacity may drop from the baseline's when the scenario sets no `[targets.tolerance] capacity`.
pub const DEFAULT_TOLERANCE: f64 = 0.20;

/// How the rate is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// The scenario's own rate: the search never goes below it, and a failure there ends it with no capacity.
    pub floor_rps: f64,
    /// The first rate tried: the scenario's own, or just below a baseline's capacity (see [`Search::near`]).
    pub start_rps: f64,
    /// Each passing step multiplies the rate by this; each failing step before any held divides it.
    pub factor: f64,
    /// Steps between the highest rate held and the lowest failed, once both are known.
    pub refinements: u32,
    /// No search takes more steps than this, whatever happens.
    pub max_steps: usize,
}

impl Search {
    /// A search that starts at the scenario's own rate `floor_rps`.
    pub fn from_floor(floor_rps: f64, max_steps: usize) -> Self {
        Search { floor_rps, start_rps: floor_rps, factor: 1.5, refinements: 2, max_steps }
    }

    /// Starts one step below `capacity_rps` (a baseline's), never below the floor: a search that is compared with
    /// that baseline needs only the rates around it, so it takes about five steps instead of a dozen.
    pub fn near(self, capacity_rps: f64) -> Self {
        Search { start_rps: (capacity_rps / self.factor).max(self.floor_rps), ..self }
    }

    /// The rate of the next step after `steps`, or `None` when the search is over.
    pub fn next(&self, steps: &[Step]) -> Option<f64> {
        if steps.len() >= self.max_steps {
            return None;
        }
        match bracket(steps) {
            (None, None) => Some(self.start_rps),
            (Some(held), None) => Some(held * self.factor),
            // Nothing held yet: step down, until the scenario's own rate, which failing ends the search.
            (None, Some(failed)) => (failed > self.floor_rps).then(|| (failed / self.factor).max(self.floor_rps)),
            (Some(held), Some(failed)) => {
                let bracketed = (1..=steps.len())
                    .find(|&n| matches!(bracket(&steps[..n]), (Some(_), Some(_))))
                    .unwrap_or(steps.len());
                let refined = steps.len() - bracketed;
                (refined < self.refinements as usize).then(|| (held * failed).sqrt())
            }
        }
    }
}

/// The highest rate held below the lowest rate failed, and that lowest failed rate.
fn bracket(steps: &[Step]) -> (Option<f64>, Option<f64>) {
    let failed = steps.iter().filter(|s| !s.passed).map(|s| s.rate_rps).reduce(f64::min);
    let held =
        steps.iter().filter(|s| s.passed && failed.is_none_or(|f| s.rate_rps < f)).map(|s| s.rate_rps).reduce(f64::max);
    (held, failed)
}

/// One step: a whole run of the scenario at one rate, judged on the scenario's targets alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub rate_rps: f64,
    pub users: usize,
    pub passed: bool,
    /// The names of the checks it failed.
    pub failed: Vec<String>,
    /// Each class's p95 from the due time.
    pub p95_ms: BTreeMap<Class, f64>,
    pub error_rate: f64,
    /// Successes per second over the steady state.
    pub succeeded_rps: f64,
    pub service_cpu_cores: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
    /// The step's run folder, relative to the search's.
    pub run: String,
}

impl Step {
    /// The step that ran at `rate_rps` with `users` in the folder `run`, from its summary and its verdict on the
    /// scenario's targets alone.
    pub fn from_run(rate_rps: f64, users: usize, run: String, summary: &Summary, verdict: &Verdict) -> Self {
        Step {
            rate_rps,
            users,
            passed: verdict.passed,
            failed: verdict.checks.iter().filter(|c| c.outcome != Outcome::Pass).map(|c| c.name.clone()).collect(),
            p95_ms: summary
                .classes
                .iter()
                .filter(|(_, s)| s.count > 0)
                .map(|(c, s)| (*c, s.corrected.p95_ms))
                .collect(),
            error_rate: summary.rate.error_rate,
            succeeded_rps: summary.rate.achieved_rps,
            service_cpu_cores: summary.server.process.cpu_cores_mean,
            cpu_us_per_request: summary.server.cpu_us_per_request,
            run,
        }
    }
}

/// A finished search, as `capacity.json` and a baseline keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub schema_version: u32,
    pub scenario: String,
    pub backend: String,
    pub git_revision: Option<String>,
    pub search: Search,
    /// How far the capacity may drop from a baseline's before it is a regression, as a fraction.
    pub tolerance: f64,
    pub steps: Vec<Step>,
    /// The highest rate held below every rate that failed; `None` when the scenario's own rate failed.
    pub capacity_rps: Option<f64>,
    /// Whether a failed rate was found above it: if not, the capacity is only a lower bound (the search ran out
    /// of steps).
    pub bounded: bool,
}

impl Capacity {
    pub fn new(
        scenario: String,
        backend: String,
        git_revision: Option<String>,
        search: Search,
        tolerance: f64,
        steps: Vec<Step>,
    ) -> Self {
        let (held, failed) = bracket(&steps);
        Capacity {
            schema_version: SCHEMA_VERSION,
            scenario,
            backend,
            git_revision,
            search,
            tolerance,
            steps,
            capacity_rps: held,
            bounded: failed.is_some(),
        }
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        crate::versioned::read(path, "capacity", SCHEMA_VERSION)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::versioned::write(self, path)
    }

    /// The steps as a table, in the order they ran, and the result.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let classes: Vec<Class> = self
            .steps
            .iter()
            .flat_map(|s| s.p95_ms.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = write!(out, "{:>9} {:>6} {:>10} {:>7}", "req/s", "users", "succeeded", "errors");
        for class in &classes {
            let _ = write!(out, " {:>12}", format!("{class} p95 ms"));
        }
        let _ = writeln!(out, " {:>7} {:>8}  result", "cores", "µs/req");
        for s in &self.steps {
            let _ = write!(
                out,
                "{:>9.0} {:>6} {:>10.0} {:>6.2}%",
                s.rate_rps,
                s.users,
                s.succeeded_rps,
                s.error_rate * 100.0
            );
            for class in &classes {
                let p95 = s.p95_ms.get(class).map_or("-".to_owned(), |v| format!("{v:.1}"));
                let _ = write!(out, " {p95:>12}");
            }
            let cores = s.service_cpu_cores.map_or("-".to_owned(), |v| format!("{v:.2}"));
            let us = s.cpu_us_per_request.map_or("-".to_owned(), |v| format!("{v:.0}"));
            let result = if s.passed { "held".to_owned() } else { format!("FAIL: {}", s.failed.join(", ")) };
            let _ = writeln!(out, " {cores:>7} {us:>8}  {result}");
        }
        let _ = match (self.capacity_rps, self.bounded) {
            (Some(c), true) => {
                writeln!(out, "capacity: {c:.0} req/s (the highest rate held below every rate that failed)")
            }
            (Some(c), false) => {
                writeln!(out, "capacity: at least {c:.0} req/s (no rate failed within {} steps)", self.search.max_steps)
            }
            (None, _) => writeln!(out, "capacity: below the scenario's own rate of {:.0} req/s", self.search.floor_rps),
        };
        out
    }
}

/// This search's capacity against a baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline_rps: Option<f64>,
    pub current_rps: Option<f64>,
    /// `current / baseline - 1`.
    pub relative: Option<f64>,
    pub tolerance: f64,
    pub change: Change,
    /// Why the two cannot be compared, when they cannot: that fails.
    pub note: Option<String>,
}

impl Comparison {
    /// Whether the gate fails on it.
    pub fn fails(&self) -> bool {
        self.change == Change::Regressed || self.note.is_some()
    }
}

/// "5126 req/s then, 4613 now (-10.0 %, tolerance 15 %): Steady", with the note when there is one.
impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rps = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.0}"));
        write!(f, "{} req/s then, {} now", rps(self.baseline_rps), rps(self.current_rps))?;
        if let Some(r) = self.relative {
            write!(f, " ({:+.1} %, tolerance {:.0} %)", r * 100.0, self.tolerance * 100.0)?;
        }
        write!(f, ": {:?}", self.change)?;
        match &self.note {
            Some(note) => write!(f, " — {note}"),
            None => Ok(()),
        }
    }
}

/// Regressed when the capacity dropped by more than the baseline's tolerance (or a capacity was found before and
/// none now); improved when it grew by more. Searches of another scenario or backend are not compared.
pub fn compare(run: &Capacity, baseline: &Capacity) -> Comparison {
    let tolerance = baseline.tolerance;
    let mut comparison = Comparison {
        baseline_rps: baseline.capacity_rps,
        current_rps: run.capacity_rps,
        relative: None,
        tolerance,
        change: Change::Steady,
        note: None,
    };
    if (run.scenario.as_str(), run.backend.as_str()) != (baseline.scenario.as_str(), baseline.backend.as_str()) {
        comparison.note = Some(format!(
            "the baseline is of scenario {} on {}, this search of {} on {}",
            baseline.scenario, baseline.backend, run.scenario, run.backend
        ));
        return comparison;
    }
    match (run.capacity_rps, baseline.capacity_rps) {
        (Some(now), Some(then)) if then > 0.0 => {
            let relative = now / then - 1.0;
            comparison.relative = Some(relative);
            comparison.change = if relative < -tolerance {
                Change::Regressed
            } else if relative > tolerance {
                Change::Improved
            } else {
                Change::Steady
            };
        }
        (None, Some(_)) => comparison.change = Change::Regressed,
        (Some(_), None) => comparison.change = Change::Improved,
        _ => {}
    }
    comparison
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate_rps: f64, passed: bool) -> Step {
        Step {
            rate_rps,
            users: 10,
            passed,
            failed: if passed { vec![] } else { vec!["api p95 latency".into()] },
            p95_ms: BTreeMap::from([(Class::Api, 5.0)]),
            error_rate: 0.0,
            succeeded_rps: rate_rps,
            service_cpu_cores: Some(0.5),
            cpu_us_per_request: Some(300.0),
            run: format!("step-{rate_rps:.0}"),
        }
    }

    const SEARCH: Search = Search { floor_rps: 200.0, start_rps: 200.0, factor: 1.5, refinements: 2, max_steps: 12 };

    /// Runs the search against a deployment that holds every rate up to `limit`.
    fn search(limit: f64, s: Search) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(rate) = s.next(&steps) {
            steps.push(step(rate, rate <= limit));
        }
        steps
    }

    #[test]
    fn steps_up_by_the_factor_then_refines_between_held_and_failed() {
        let steps = search(1000.0, SEARCH);
        let rates: Vec<f64> = steps.iter().map(|s| s.rate_rps.round()).collect();
        // 200, 300, 450, 675 held, 1013 failed; then √(675·1013) = 827 held, √(827·1013) = 915 held.
        assert_eq!(rates, vec![200.0, 300.0, 450.0, 675.0, 1013.0, 827.0, 915.0]);
        let c = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, steps);
        assert_eq!(c.capacity_rps.map(f64::round), Some(915.0));
        assert!(c.bounded);
        // Within the search's resolution of the true limit.
        assert!((1000.0 / c.capacity_rps.unwrap()) < 1.5f64.powf(0.25) + 1e-9);
    }

    #[test]
    fn a_failing_first_step_ends_the_search_with_no_capacity() {
        let steps = search(100.0, SEARCH);
        assert_eq!(steps.len(), 1);
        let c = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, steps);
        assert_eq!((c.capacity_rps, c.bounded), (None, true));
        assert!(c.table().contains("below the scenario's own rate"), "{}", c.table());
    }

    #[test]
    fn a_search_near_a_baseline_starts_below_it_and_steps_down_when_it_fails() {
        let near = SEARCH.near(1000.0);
        let rates = |limit| search(limit, near).iter().map(|s| s.rate_rps.round()).collect::<Vec<f64>>();
        // Unchanged: 667 held, 1000 held, 1500 failed; √(1000·1500) = 1225 failed, √(1000·1225) = 1107 failed.
        assert_eq!(rates(1050.0), vec![667.0, 1000.0, 1500.0, 1225.0, 1107.0]);
        // Halved: 667 failed, 444 held, then refined between them.
        assert_eq!(rates(500.0), vec![667.0, 444.0, 544.0, 492.0]);
        // Far below: down to the floor, whose failure ends the search with no capacity.
        assert_eq!(rates(100.0), vec![667.0, 444.0, 296.0, 200.0]);
        let c = Capacity::new("smoke".into(), "embedded".into(), None, near, 0.15, search(100.0, near));
        assert_eq!(c.capacity_rps, None);
        // Never below the floor, even from a baseline below it.
        assert_eq!(SEARCH.near(250.0).start_rps, 200.0);
    }

    #[test]
    fn the_search_is_bounded_and_says_when_nothing_failed() {
        let s = Search { max_steps: 4, ..SEARCH };
        let steps = search(f64::INFINITY, s);
        assert_eq!(steps.len(), 4);
        let c = Capacity::new("smoke".into(), "embedded".into(), None, s, 0.15, steps);
        assert_eq!((c.capacity_rps.map(f64::round), c.bounded), (Some(675.0), false));
        assert!(c.table().contains("at least 675"), "{}", c.table());
    }

    #[test]
    fn a_pass_above_a_failure_does_not_count() {
        let steps = vec![step(200.0, true), step(300.0, false), step(450.0, true)];
        let c = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, steps);
        assert_eq!(c.capacity_rps, Some(200.0));
    }

    #[test]
    fn a_drop_beyond_the_tolerance_regresses_and_other_scenarios_are_not_compared() {
        let base = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, search(1000.0, SEARCH));
        let same = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, search(1000.0, SEARCH));
        assert_eq!(compare(&same, &base).change, Change::Steady);
        assert!(!compare(&same, &base).fails());
        let halved = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, search(500.0, SEARCH));
        let c = compare(&halved, &base);
        assert_eq!(c.change, Change::Regressed, "{c:?}");
        assert!(c.fails());
        // One refinement step down (×1.5^(1/4)) is within a 15 % tolerance.
        let a_notch = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, search(900.0, SEARCH));
        assert_eq!(compare(&a_notch, &base).change, Change::Steady, "{:?}", compare(&a_notch, &base));
        let none = Capacity::new("smoke".into(), "embedded".into(), None, SEARCH, 0.15, search(100.0, SEARCH));
        assert_eq!(compare(&none, &base).change, Change::Regressed);
        let other = Capacity::new("peak".into(), "embedded".into(), None, SEARCH, 0.15, search(1000.0, SEARCH));
        assert!(compare(&other, &base).fails());
    }
}
