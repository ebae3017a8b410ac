//! Instruction counts of the hot request paths (`service/benches/instructions.rs`, counted by callgrind) and
//! their comparison with a committed baseline (`reports/baselines/instructions.json`).
//!
//! A count is the same on every run of the same binary and inputs, whatever the machine is doing, so the
//! tolerance can be far tighter than a latency's. It does change with the compiler and the dependencies: the
//! baseline records the compiler it was counted with, and a comparison across compilers says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::verdict::Change;

/// The version of [`Counts`]' schema.
pub const SCHEMA_VERSION: u32 = 1;

/// One set of counts, as a baseline file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub schema_version: u32,
    /// How far a count may grow before it is a regression, as a fraction.
    pub tolerance: f64,
    /// `rustc --version` of the build that was counted.
    pub rustc: String,
    pub git_revision: Option<String>,
    /// Instructions executed per request path (callgrind's `Ir`), by bench name.
    pub counts: BTreeMap<String, u64>,
}

impl Counts {
    pub fn read(path: &Path) -> Result<Self, String> {
        crate::versioned::read(path, "instruction counts", SCHEMA_VERSION)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::versioned::write(self, path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountChange {
    Regressed,
    Improved,
    Steady,
    /// Not in the baseline: shown, never fails.
    New,
    /// In the baseline and not counted now: fails, a path must not drop out of the gate unnoticed.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountDelta {
    pub name: String,
    pub baseline: Option<u64>,
    pub current: Option<u64>,
    /// `current / baseline - 1`.
    pub relative: Option<f64>,
    pub change: CountChange,
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub tolerance: f64,
    pub deltas: Vec<CountDelta>,
    /// Why the counts may differ for reasons other than the code (another compiler).
    pub note: Option<String>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.deltas.iter().all(|d| !matches!(d.change, CountChange::Regressed | CountChange::Missing))
    }

    /// One line per regression or missing path.
    pub fn failures(&self) -> Vec<String> {
        self.deltas
            .iter()
            .filter_map(|d| match (d.change, d.baseline, d.current, d.relative) {
                (CountChange::Regressed, Some(b), Some(c), Some(r)) => Some(format!(
                    "FAIL {} regressed: {c} instructions against {b} in the baseline ({:+.2} %, tolerance {:.1} %)",
                    d.name,
                    r * 100.0,
                    self.tolerance * 100.0
                )),
                (CountChange::Missing, ..) => Some(format!("FAIL {}: in the baseline, not counted now", d.name)),
                _ => None,
            })
            .collect()
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<22} {:>14} {:>14} {:>9}  result", "request path", "baseline", "this build", "change");
        let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        for d in &self.deltas {
            let change = d.relative.map_or(String::new(), |r| format!("{:+.2} %", r * 100.0));
            let result = match d.change {
                CountChange::Regressed => "FAIL (regressed)",
                CountChange::Improved => "improved",
                CountChange::Steady => "steady",
                CountChange::New => "new (not in the baseline)",
                CountChange::Missing => "FAIL (not counted)",
            };
            let _ =
                writeln!(out, "{:<22} {:>14} {:>14} {change:>9}  {result}", d.name, show(d.baseline), show(d.current));
        }
        let _ = writeln!(out, "tolerance: {:.1} % per path", self.tolerance * 100.0);
        if let Some(note) = &self.note {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// Each path of `current` against `baseline`, within the baseline's tolerance.
pub fn compare(baseline: &Counts, current: &BTreeMap<String, u64>, rustc: &str) -> Comparison {
    let names: std::collections::BTreeSet<&String> = baseline.counts.keys().chain(current.keys()).collect();
    let deltas = names
        .into_iter()
        .map(|name| {
            let (b, c) = (baseline.counts.get(name).copied(), current.get(name).copied());
            let relative = match (b, c) {
                (Some(b), Some(c)) if b > 0 => Some(c as f64 / b as f64 - 1.0),
                _ => None,
            };
            let change = match (b, c, relative) {
                (None, _, _) => CountChange::New,
                (Some(_), None, _) => CountChange::Missing,
                (_, _, Some(r)) => match crate::verdict::classify(r, r, baseline.tolerance) {
                    Change::Regressed => CountChange::Regressed,
                    Change::Improved => CountChange::Improved,
                    Change::Steady | Change::Inconclusive => CountChange::Steady,
                },
                _ => CountChange::Steady,
            };
            CountDelta { name: name.clone(), baseline: b, current: c, relative, change }
        })
        .collect();
    let note = (baseline.rustc != rustc).then(|| {
        format!(
            "the baseline was counted with {}, this build with {rustc}: the compiler moves counts too",
            baseline.rustc
        )
    });
    Comparison { tolerance: baseline.tolerance, deltas, note }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> Counts {
        Counts {
            schema_version: SCHEMA_VERSION,
            tolerance: 0.02,
            rustc: "rustc 1.95.0".into(),
            git_revision: None,
            counts: [("metadata_get".to_owned(), 100_000), ("upload_64k".to_owned(), 2_000_000)].into(),
        }
    }

    fn change(c: &Comparison, name: &str) -> CountChange {
        c.deltas.iter().find(|d| d.name == name).unwrap().change
    }

    #[test]
    fn growth_beyond_the_tolerance_fails_and_names_the_path() {
        let now = [("metadata_get".to_owned(), 102_001), ("upload_64k".to_owned(), 2_030_000)].into();
        let c = compare(&baseline(), &now, "rustc 1.95.0");
        assert!(!c.passed());
        assert_eq!(change(&c, "metadata_get"), CountChange::Regressed);
        assert_eq!(change(&c, "upload_64k"), CountChange::Steady);
        let failures = c.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("FAIL metadata_get regressed: 102001"), "{failures:?}");
        assert!(c.note.is_none());
    }

    #[test]
    fn improvements_and_new_paths_pass_and_a_missing_one_fails() {
        let now = [("metadata_get".to_owned(), 90_000), ("auth_refused".to_owned(), 5_000)].into();
        let c = compare(&baseline(), &now, "rustc 1.96.0");
        assert_eq!(change(&c, "metadata_get"), CountChange::Improved);
        assert_eq!(change(&c, "auth_refused"), CountChange::New);
        assert_eq!(change(&c, "upload_64k"), CountChange::Missing);
        assert!(!c.passed());
        assert!(c.note.as_deref().unwrap().contains("rustc 1.96.0"));
        assert!(c.table().contains("FAIL (not counted)"));
    }

    #[test]
    fn the_same_counts_pass() {
        let c = compare(&baseline(), &baseline().counts, "rustc 1.95.0");
        assert!(c.passed());
        assert!(c.deltas.iter().all(|d| d.change == CountChange::Steady));
    }
}
