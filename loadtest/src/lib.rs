//! `fwb-loadtest`: load scenarios for FileWallBall on goose.
//!
//! [`scenario`] reads the TOML profiles, [`seed`] makes the data through the public API, [`pacing`] runs goose
//! users on a schedule and records honest latency, [`workload`] is what the users do, [`monitor`] watches the
//! service, and [`run`] ties them together into a `summary.json` ([`fwb_reports::Summary`]).

pub mod content;
pub mod monitor;
pub mod pacing;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod workload;

/// A table of the main figures, for a terminal.
pub fn summary_table(s: &fwb_reports::Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {} ({}): {:.1} of {:.1} req/s ({:.1} %), {} requests, {} errors ({:.3} %)",
        s.run.scenario,
        s.run.target_url,
        s.run.backend,
        s.rate.achieved_rps,
        s.rate.target_rps,
        s.rate.achieved_fraction * 100.0,
        s.rate.requests,
        s.rate.errors,
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
    let _ = writeln!(out, "cache hit ratio {} ({})", ratio(s.cache.total.ratio), families.join(", "));
    let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
    let mib = |b: Option<u64>| b.map_or("-".to_owned(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
    let _ = writeln!(
        out,
        "service ({}): cpu mean {} max {} cores, rss mean {} max {}; loadtest: cpu mean {} cores, rss max {}; machine busy {}",
        s.server.source,
        cores(s.server.process.cpu_cores_mean),
        cores(s.server.process.cpu_cores_max),
        mib(s.server.process.rss_bytes_mean),
        mib(s.server.process.rss_bytes_max),
        cores(s.loadtest.cpu_cores_mean),
        mib(s.loadtest.rss_bytes_max),
        ratio(s.machine.cpu_busy_mean),
    );
    out
}
