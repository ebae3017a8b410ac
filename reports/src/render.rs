//! Text renderings of summaries: the Markdown page of a run, two runs side by side.

use std::fmt::Write;

use crate::verdict::{Outcome, Verdict};
use crate::{Class, Summary};

/// `summary.md`: the verdict, then the figures.
pub fn markdown(s: &Summary, verdict: &Verdict) -> String {
    let mut out = String::new();
    heading(&mut out, s, verdict);
    checks(&mut out, verdict);
    deltas(&mut out, verdict);
    latencies(&mut out, s);
    shedding(&mut out, s);
    out.push_str("```\n");
    out.push_str(&crate::summary_table(s));
    out.push_str("```\n");
    out
}

/// The verdict and what was run, where and on which revision.
fn heading(out: &mut String, s: &Summary, verdict: &Verdict) {
    let _ = writeln!(out, "# {} — {}\n", s.run.scenario, if verdict.passed { "PASS" } else { "FAIL" });
    let _ = writeln!(
        out,
        "{} on {} ({} backend), {} users, steady state {} s from {}; revision {}{}.\n",
        s.run.scenario_file,
        s.run.target_url,
        s.run.backend,
        s.run.users,
        s.run.steady_seconds,
        s.run.steady_started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        s.run.git_revision.as_deref().map_or("unknown", |r| &r[..r.len().min(12)]),
        if s.run.git_dirty == Some(true) { " (with uncommitted changes)" } else { "" },
    );
}

/// The targets, each with what was measured and whether it was met.
fn checks(out: &mut String, verdict: &Verdict) {
    let _ = writeln!(out, "| check | measured | limit | result |\n|---|---:|---:|---|");
    for c in &verdict.checks {
        let result = match c.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "**FAIL**",
            Outcome::Missing => "**FAIL** (not measured)",
        };
        let bound = if c.bound == crate::verdict::Bound::AtMost { "≤" } else { "≥" };
        let _ = writeln!(
            out,
            "| {} | {} | {bound} {} | {result} |",
            c.name,
            value(c.measured, &c.unit),
            value(Some(c.limit), &c.unit)
        );
    }
}

/// The comparison with the baseline, when there is one.
fn deltas(out: &mut String, verdict: &Verdict) {
    if !verdict.deltas.is_empty() {
        let _ = writeln!(
            out,
            "\n| against the baseline | baseline | this run | change | result |\n|---|---:|---:|---:|---|"
        );
        for d in &verdict.deltas {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:+.1} % | {:?} |",
                d.name,
                value(Some(d.baseline), &d.unit),
                value(Some(d.current), &d.unit),
                d.relative * 100.0,
                d.change
            );
        }
    }
}

/// The rate held, then each class's and request's latencies.
fn latencies(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "\nRate: {:.1} of {:.1} req/s succeeded ({:.1} %); {} requests due, {} failed, {} never sent.\n",
        s.rate.achieved_rps,
        s.rate.target_rps,
        s.rate.achieved_fraction * 100.0,
        s.rate.requests,
        s.rate.errors,
        s.rate.missed
    );
    let _ = writeln!(
        out,
        "| | count | errors | p50 | p95 | p99 | max | sent p50 | sent p95 | sent p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let rows = s
        .classes
        .iter()
        .map(|(c, st)| (format!("**{c}**"), st))
        .chain(s.requests.iter().map(|(n, st)| (n.clone(), st)));
    for (label, st) in rows {
        let (c, x) = (&st.corrected, &st.sent);
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            st.count, st.errors, c.p50_ms, c.p95_ms, c.p99_ms, c.max_ms, x.p50_ms, x.p95_ms, x.p99_ms
        );
    }
    let _ = writeln!(
        out,
        "\nLatencies in ms; p50–max from each request's due time (corrected), `sent` from its send time.\n"
    );
}

/// The load shed by class, when any was.
fn shedding(out: &mut String, s: &Summary) {
    let shedding: Vec<_> = s.classes.iter().filter_map(|(c, st)| st.shedding.map(|sh| (c, st.count, sh))).collect();
    if !shedding.is_empty() {
        let _ = writeln!(
            out,
            "Load shed (503) by class; admitted from due time, refusals from send time, in ms:\n\n\
             | | shed | share | admitted p50 | admitted p95 | admitted p99 | refusal p95 |\n\
             |---|---:|---:|---:|---:|---:|---:|"
        );
        for (class, count, sh) in shedding {
            let share = sh.shed as f64 / count.max(1) as f64 * 100.0;
            let (a, r) = (sh.admitted, sh.refused);
            let _ = writeln!(
                out,
                "| **{class}** | {} | {share:.1} % | {:.2} | {:.2} | {:.2} | {:.2} |",
                sh.shed, a.p50_ms, a.p95_ms, a.p99_ms, r.p95_ms
            );
        }
        out.push('\n');
    }
}

/// A figure with its unit; fractions (`%`) as percentages, `–` when not measured.
pub(crate) fn value(v: Option<f64>, unit: &str) -> String {
    match (v, unit) {
        (None, _) => "–".into(),
        (Some(v), "%") => format!("{:.2} %", v * 100.0),
        (Some(v), "count") => format!("{v:.0}"),
        (Some(v), u) => format!("{v:.2} {u}"),
    }
}

/// Two summaries' main figures side by side, with the change from the first to the second.
pub fn side_by_side(a: &Summary, b: &Summary) -> String {
    let mut out = String::new();
    let name = |s: &Summary| {
        format!(
            "{} {} {}",
            s.run.scenario,
            s.run.backend,
            s.run.git_revision.as_deref().map_or("?", |r| &r[..r.len().min(8)])
        )
    };
    let _ = writeln!(out, "{:<28} {:>22} {:>22} {:>9}", "", name(a), name(b), "change");
    let mut row = |label: &str, x: Option<f64>, y: Option<f64>, unit: &str| {
        let show = |v: Option<f64>| {
            v.map_or("–".to_owned(), |v| {
                if unit == "%" { format!("{:.2} %", v * 100.0) } else { format!("{v:.2} {unit}") }
            })
        };
        let change = match (x, y) {
            (Some(x), Some(y)) if x != 0.0 => format!("{:+.1} %", (y / x - 1.0) * 100.0),
            _ => "".into(),
        };
        let _ = writeln!(out, "{label:<28} {:>22} {:>22} {change:>9}", show(x), show(y));
    };
    row("succeeded rate", Some(a.rate.achieved_rps), Some(b.rate.achieved_rps), "req/s");
    row("error rate", Some(a.rate.error_rate), Some(b.rate.error_rate), "%");
    row("cache hit ratio (data)", a.cache.data.ratio, b.cache.data.ratio, "%");
    row("cache hit ratio (all)", a.cache.total.ratio, b.cache.total.ratio, "%");
    for class in Class::ALL {
        let (x, y) = (a.classes.get(&class), b.classes.get(&class));
        for (label, pick) in [("p50", 0), ("p95", 1), ("p99", 2)] {
            let get = |s: Option<&crate::RequestStats>| {
                s.map(|s| match pick {
                    0 => s.corrected.p50_ms,
                    1 => s.corrected.p95_ms,
                    _ => s.corrected.p99_ms,
                })
            };
            row(&format!("{class} {label}"), get(x), get(y), "ms");
        }
    }
    row("service CPU mean", a.server.process.cpu_cores_mean, b.server.process.cpu_cores_mean, "cores");
    row("service CPU per request", a.server.cpu_us_per_request, b.server.cpu_us_per_request, "µs");
    row(
        "service RSS max",
        a.server.process.rss_bytes_max.map(|v| v as f64 / 1048576.0),
        b.server.process.rss_bytes_max.map(|v| v as f64 / 1048576.0),
        "MiB",
    );
    row("loadtest CPU mean", a.loadtest.cpu_cores_mean, b.loadtest.cpu_cores_mean, "cores");
    out
}
