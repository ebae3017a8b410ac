//! `cargo xtask perf --instructions`: count the instructions of the hot request paths under callgrind (through
//! gungraun, `service/benches/instructions.rs`) and compare them with `reports/baselines/instructions.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use fwb_reports::instructions::{self, Counts};
use xshell::{Shell, cmd};

/// The runner gungraun's benches hand their measurements to; its version must equal the library's.
const RUNNER_VERSION: &str = "0.20.0";

/// The committed baseline.
pub(crate) const BASELINE: &str = "reports/baselines/instructions.json";

/// Runs the benches `rounds` times, takes each path's median, writes `instructions.json` (and the table) into
/// `out`, compares with `baseline`; with `write_baseline`, the counts replace the baseline instead (keeping its
/// tolerance). With `only_path`, only that path is counted, compared or replaced.
///
/// One round's count of a path moves by up to about 2 % from run to run: each bench is a new process, whose hash
/// seeds (the cache's and the maps') and allocator state differ, so the same requests probe and allocate a little
/// differently. The median of three of unchanged code moved by up to +3.06 % from the baseline's median of five
/// on a second machine (see the baselines README), inside the 5 % tolerance.
pub(crate) fn run(
    sh: &Shell,
    out: &Path,
    baseline: &Path,
    write_baseline: bool,
    rounds: usize,
    only_path: Option<&str>,
) -> anyhow::Result<()> {
    check_tools(sh)?;
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    let started = std::time::Instant::now();
    let filter = only_path.map(|name| format!("*::{name}"));
    let mut args = vec!["bench", "-p", "filewallball", "--bench", "instructions", "--", "--save-summary=json"];
    args.extend(filter.as_deref());
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        let home = out.join(format!("gungraun/round-{round}"));
        crate::cargo(sh, &args)
            .env("GUNGRAUN_HOME", &home)
            .run()
            .context("counting instructions (cargo bench --bench instructions)")?;
        if let Some(name) = only_path {
            // gungraun writes nothing when its filter matched no bench.
            anyhow::ensure!(home.exists(), "no request path is named {name:?} (see service/benches/instructions.rs)");
        }
        let counts = read_counts(&home)?;
        per_round.push(counts);
    }
    let counted = medians(&per_round);
    eprintln!(
        "perf: counted {} request paths, median of {rounds} rounds, in {:.0} s",
        counted.len(),
        started.elapsed().as_secs_f64()
    );
    let rustc = cmd!(sh, "rustc --version").read()?;
    let git_revision = cmd!(sh, "git rev-parse HEAD").read().ok();

    let base = Counts::read(baseline);
    let current = Counts {
        schema_version: instructions::SCHEMA_VERSION,
        // A rewritten baseline keeps its tolerance.
        tolerance: base.as_ref().map_or(DEFAULT_TOLERANCE, |b| b.tolerance),
        rustc,
        git_revision,
        counts: counted,
    };
    if write_baseline {
        let mut written = current.clone();
        if let (Some(_), Ok(base)) = (only_path, &base) {
            // One path re-counted: the others keep their counts.
            written.counts = base.counts.clone();
            written.counts.extend(current.counts.clone());
        }
        written.write(baseline)?;
        println!("{}", serde_json::to_string_pretty(&current.counts)?);
        println!("wrote {}", baseline.display());
        return Ok(());
    }

    let mut base = base.map_err(anyhow::Error::msg)?;
    if only_path.is_some() {
        base.counts.retain(|name, _| current.counts.contains_key(name));
    }
    let comparison = instructions::compare(&base, &current.counts, &current.rustc);
    current.write(&out.join("instructions.json"))?;
    std::fs::write(out.join("instructions-verdict.json"), serde_json::to_string_pretty(&comparison)? + "\n")?;
    let table = comparison.table();
    std::fs::write(out.join("instructions.txt"), &table)?;
    println!("\n{table}");
    println!("run folder: {}", out.display());
    if comparison.passed() {
        return Ok(());
    }
    for line in comparison.failures() {
        eprintln!("{line}");
    }
    Err(crate::perf::GateFailed.into())
}

/// For a first baseline: the committed one's, over the largest move of a median of three rounds of unchanged code
/// seen on two machines (+3.06 %).
const DEFAULT_TOLERANCE: f64 = 0.05;

/// Each path's median over the rounds that counted it (the lower middle of an even count).
fn medians(rounds: &[BTreeMap<String, u64>]) -> BTreeMap<String, u64> {
    let mut all: BTreeMap<&String, Vec<u64>> = BTreeMap::new();
    for round in rounds {
        for (name, &count) in round {
            all.entry(name).or_default().push(count);
        }
    }
    all.into_iter()
        .map(|(name, mut counts)| {
            counts.sort_unstable();
            (name.clone(), counts[(counts.len() - 1) / 2])
        })
        .collect()
}

/// valgrind and the runner at the library's version, or a message saying how to get them.
fn check_tools(sh: &Shell) -> anyhow::Result<()> {
    if cmd!(sh, "valgrind --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        bail!("--instructions needs valgrind (Debian: apt-get install valgrind)");
    }
    let version = cmd!(sh, "gungraun-runner --version").quiet().read().unwrap_or_default();
    if !version.contains(RUNNER_VERSION) {
        bail!(
            "--instructions needs gungraun-runner {RUNNER_VERSION} (found: {}): \
             cargo install --locked gungraun-runner --version {RUNNER_VERSION}",
            if version.is_empty() { "none" } else { version.as_str() }
        );
    }
    Ok(())
}

/// `Ir` of every bench under gungraun's output folder, by the bench's id (`metadata_get`, …).
fn read_counts(home: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for path in summaries(home)? {
        let text = std::fs::read_to_string(&path)?;
        let summary: serde_json::Value = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let (id, ir) = bench_count(&summary).with_context(|| format!("{}: no bench id or Ir count", path.display()))?;
        counts.insert(id, ir);
    }
    if counts.is_empty() {
        bail!("gungraun wrote no summary under {}", home.display());
    }
    Ok(counts)
}

fn summaries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(summaries(&path)?);
        } else if path.file_name().is_some_and(|n| n == "summary.json") {
            found.push(path);
        }
    }
    Ok(found)
}

/// The bench's id and its total `Ir` from one gungraun summary (schema v6).
fn bench_count(summary: &serde_json::Value) -> Option<(String, u64)> {
    let id = summary.get("id")?.as_str()?.to_owned();
    let profile =
        summary.get("profiles")?.as_array()?.iter().find(|p| p.get("tool").is_some_and(|t| t == "Callgrind"))?;
    let ir = profile.pointer("/data/total/metrics/Ir/values/new")?.as_u64()?;
    Some((id, ir))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_count_is_read_from_a_gungraun_summary() {
        let summary = serde_json::json!({
            "id": "metadata_get",
            "profiles": [{
                "tool": "Callgrind",
                "data": { "total": { "metrics": { "Ir": { "values": { "new": 120123 } } } }, "parts": [] }
            }]
        });
        assert_eq!(super::bench_count(&summary), Some(("metadata_get".to_owned(), 120_123)));
        assert_eq!(super::bench_count(&serde_json::json!({ "id": "x", "profiles": [] })), None);
    }

    #[test]
    fn each_path_takes_its_median_round() {
        let round = |a: u64, b: u64| [("a".to_owned(), a), ("b".to_owned(), b)].into_iter().collect();
        let medians = super::medians(&[round(10, 7), round(30, 5), round(20, 6)]);
        assert_eq!(medians, round(20, 6));
    }
}
