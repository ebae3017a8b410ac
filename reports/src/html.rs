//! `report.html`: one self-contained page per run — the verdict first, then the charts, drawn as inline SVG
//! (no scripts, no fetched assets), with the baseline's figures beside this run's when there is one.

use std::fmt::Write;

use crate::render::value;
use crate::verdict::{Bound, Change, Outcome, Verdict};
use crate::{Class, Summary};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 240.0;
const PAD_LEFT: f64 = 56.0;
const PAD_BOTTOM: f64 = 34.0;
const PAD_TOP: f64 = 12.0;
const PAD_RIGHT: f64 = 12.0;

/// Row labels of the cache table's two totals.
const DATA_TOTAL: &str = "data families";
const ALL_TOTAL: &str = "all, with permissions";

/// One line of a chart.
struct Line<'a> {
    label: String,
    points: Vec<(f64, f64)>,
    color: &'a str,
    dashed: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Round figures for axis ticks.
fn ticks(max: f64) -> Vec<f64> {
    if max <= 0.0 || !max.is_finite() {
        return vec![0.0, 1.0];
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    (0..=((max / step).ceil() as usize)).map(|i| i as f64 * step).collect()
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart. `x_nines`: the x axis is percentiles spaced by nines (50, 90, 99, 99.9 …).
fn chart(title: &str, x_label: &str, y_label: &str, lines: &[Line<'_>], x_nines: bool) -> String {
    let mut svg = String::new();
    let to_x = |x: f64| if x_nines { -(1.0 - (x / 100.0).min(0.99999)).log10() } else { x };
    let xs: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| to_x(p.0))).collect();
    let ys: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).collect();
    if xs.is_empty() {
        return format!("<figure><figcaption>{}</figcaption><p class=note>no data</p></figure>", esc(title));
    }
    let (x_min, x_max) = (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(0.0, f64::max));
    let x_max = if x_max <= x_min { x_min + 1.0 } else { x_max };
    let y_ticks = ticks(ys.iter().copied().fold(0.0, f64::max));
    let y_max = *y_ticks.last().unwrap_or(&1.0);
    let (w, h) = (WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM);
    let px = |x: f64| PAD_LEFT + (to_x(x) - x_min) / (x_max - x_min) * w;
    let py = |y: f64| PAD_TOP + h - y / y_max * h;
    let _ = write!(svg, r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#, esc(title));
    for t in &y_ticks {
        let y = py(*t);
        let _ = write!(
            svg,
            r##"<line x1="{PAD_LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            WIDTH - PAD_RIGHT,
            PAD_LEFT - 4.0,
            y + 4.0,
            fmt_num(*t)
        );
    }
    let x_ticks: Vec<(f64, String)> = if x_nines {
        [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999]
            .iter()
            .filter(|p| to_x(**p) <= x_max + 1e-9)
            .map(|p| (*p, format!("{p}")))
            .collect()
    } else {
        ticks(x_max).into_iter().filter(|t| *t <= x_max).map(|t| (t, fmt_num(t))).collect()
    };
    for (t, label) in x_ticks {
        let x = px(t);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{PAD_TOP}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{label}</text>"##,
            PAD_TOP + h,
            PAD_TOP + h + 14.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text x="12" y="{:.1}" class="axis" text-anchor="middle" transform="rotate(-90 12 {:.1})">{}</text>"#,
        PAD_LEFT + w / 2.0,
        HEIGHT - 4.0,
        esc(x_label),
        PAD_TOP + h / 2.0,
        PAD_TOP + h / 2.0,
        esc(y_label)
    );
    for line in lines {
        let d: Vec<String> = line.points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let dash = if line.dashed { r#" stroke-dasharray="5 4""# } else { "" };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"><title>{}</title></polyline>"#,
            line.color,
            d.join(" "),
            esc(&line.label)
        );
    }
    svg.push_str("</svg>");
    let legend: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                r#"<span class=key><svg width="22" height="8"><line x1="0" x2="22" y1="4" y2="4" stroke="{}" stroke-width="2"{}/></svg>{}</span>"#,
                l.color,
                if l.dashed { r#" stroke-dasharray="5 4""# } else { "" },
                esc(&l.label)
            )
        })
        .collect();
    format!("<figure><figcaption>{}</figcaption>{svg}<div class=legend>{}</div></figure>", esc(title), legend.join(" "))
}

/// The page for `run`, judged by `verdict`, beside `baseline` when given.
/// `differential`: with a baseline, the differential flamegraph's path relative to the report, or why there is none.
pub fn report(
    run: &Summary,
    verdict: &Verdict,
    baseline: Option<&Summary>,
    differential: Option<Result<&str, &str>>,
) -> String {
    let verdict_word = if verdict.passed { "PASS" } else { "FAIL" };
    let body = [
        header(run, verdict_word),
        verdict_section(verdict),
        latency_section(run, baseline),
        timeline_section(run, baseline),
        cache_section(run, baseline),
        resources_section(run),
        profile_section(run, differential),
    ]
    .concat();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 16px 32px; color: #222; }}
header {{ padding: 12px 16px; margin: 16px 0; border-radius: 6px; }}
header.pass {{ background: #e3f6e5; border: 1px solid #5cb85c; }}
header.fail {{ background: #fbe3e3; border: 1px solid #d9534f; }}
h1 {{ margin: 0 0 4px; font-size: 22px; }}
h2 {{ font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 2px; }}
table {{ border-collapse: collapse; margin: 6px 0; }}
th, td {{ padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.fail td {{ background: #fbe3e3; }} tr.better td {{ background: #e3f0fb; }} tr.class td {{ font-weight: 600; }}
.base {{ color: #888; }} .note {{ color: #666; font-size: 12px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 16px; }}
figure {{ margin: 0; width: {WIDTH}px; }} figcaption {{ font-weight: 600; margin-bottom: 2px; }}
svg text.tick {{ font-size: 10px; fill: #555; }} svg text.axis {{ font-size: 11px; fill: #333; }}
.legend {{ font-size: 12px; }} .key {{ margin-right: 12px; white-space: nowrap; }} .key svg {{ vertical-align: middle; margin-right: 4px; }}
img.flame {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head><body>
{body}
</body></html>
"#,
        title = esc(&format!("{} {verdict_word}", run.run.scenario)),
    )
}

/// The banner: the scenario, where it ran, and the verdict.
fn header(run: &Summary, verdict_word: &str) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<header class="{}"><h1>{} — {verdict_word}</h1><p>{} on {} ({} backend), {} users, {:.0} s steady from {}; revision {}{}</p></header>"#,
        verdict_word.to_lowercase(),
        esc(&run.run.scenario),
        esc(&run.run.scenario_file),
        esc(&run.run.target_url),
        esc(&run.run.backend),
        run.run.users,
        run.run.steady_seconds,
        run.run.steady_started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        esc(run.run.git_revision.as_deref().map_or("unknown", |r| &r[..r.len().min(12)])),
        if run.run.git_dirty == Some(true) { " (uncommitted changes)" } else { "" },
    );
    body
}

/// The checks against the targets and, with a baseline, the changes against it.
fn verdict_section(verdict: &Verdict) -> String {
    let mut body = String::new();
    body.push_str(
        "<section><h2>Verdict</h2><table><tr><th>check</th><th>measured</th><th>limit</th><th>result</th></tr>",
    );
    for c in &verdict.checks {
        let (class, word) = match c.outcome {
            Outcome::Pass => ("pass", "pass"),
            Outcome::Fail => ("fail", "FAIL"),
            Outcome::Missing => ("fail", "FAIL (not measured)"),
        };
        let bound = if c.bound == Bound::AtMost { "≤" } else { "≥" };
        let hint = c.hint.as_ref().map(|h| format!("<div class=note>{}</div>", esc(h))).unwrap_or_default();
        let _ = write!(
            body,
            "<tr class={class}><td>{}{hint}</td><td>{}</td><td>{bound} {}</td><td>{word}</td></tr>",
            esc(&c.name),
            value(c.measured, &c.unit),
            value(Some(c.limit), &c.unit)
        );
    }
    body.push_str("</table>");
    if !verdict.deltas.is_empty() {
        body.push_str("<h3>Against the baseline</h3><table><tr><th></th><th>baseline</th><th>this run</th><th>change</th><th>result</th></tr>");
        for d in &verdict.deltas {
            let (class, word) = match d.change {
                Change::Regressed => ("fail", "FAIL: regressed"),
                Change::Improved => ("better", "improved"),
                Change::Steady => ("pass", "steady"),
                Change::Inconclusive => ("pass", "inconclusive: too few windows"),
            };
            let bounds = d
                .bounds
                .map(|(low, high)| format!(", 95 % bounds {:+.1} % to {:+.1} %", low * 100.0, high * 100.0))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr class={class}><td>{}</td><td>{}</td><td>{}</td><td>{:+.1} %{bounds} (tolerance {:.0} %)</td><td>{word}</td></tr>",
                esc(&d.name),
                value(Some(d.baseline), &d.unit),
                value(Some(d.current), &d.unit),
                d.relative * 100.0,
                d.tolerance * 100.0
            );
        }
        body.push_str("</table>");
    }
    if let Some(note) = &verdict.baseline_note {
        let _ = write!(body, "<p class=note>baseline: {}</p>", esc(note));
    }
    body.push_str("</section>");
    body
}

/// Latency: the figures, then a percentile curve per class.
fn latency_section(run: &Summary, baseline: Option<&Summary>) -> String {
    let mut body = String::new();
    body.push_str("<section><h2>Latency (ms)</h2><table><tr><th></th><th>count</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>sent p50</th><th>sent p95</th><th>sent p99</th></tr>");
    let mut rows: Vec<(String, &crate::RequestStats, bool)> =
        run.classes.iter().map(|(c, s)| (c.to_string(), s, true)).collect();
    rows.extend(run.requests.iter().map(|(n, s)| (n.clone(), s, false)));
    for (label, s, is_class) in rows {
        let (c, x) = (&s.corrected, &s.sent);
        let base = baseline.and_then(|b| {
            if is_class {
                b.classes.iter().find(|(k, _)| k.to_string() == label).map(|(_, v)| v)
            } else {
                b.requests.get(&label)
            }
        });
        let beside = |now: f64, then: Option<f64>| match then {
            Some(t) => format!("{now:.2}<span class=base> / {t:.2}</span>"),
            None => format!("{now:.2}"),
        };
        let _ = write!(
            body,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            if is_class { " class=class" } else { "" },
            esc(&label),
            s.count,
            s.errors,
            beside(c.p50_ms, base.map(|b| b.corrected.p50_ms)),
            beside(c.p95_ms, base.map(|b| b.corrected.p95_ms)),
            c.p99_ms,
            c.max_ms,
            x.p50_ms,
            x.p95_ms,
            x.p99_ms
        );
    }
    body.push_str("</table>");
    if baseline.is_some() {
        body.push_str("<p class=note>Grey figures after a slash are the baseline's.</p>");
    }
    body.push_str("<p class=note>p50–max from each request's due time (coordinated-omission corrected; the targets use it); <em>sent</em> from its send time.</p><div class=charts>");
    for class in Class::ALL {
        let Some(stats) = run.classes.get(&class) else { continue };
        let mut lines = vec![
            Line {
                label: "from due time".into(),
                points: pairs(&stats.corrected_curve),
                color: "#1f77b4",
                dashed: false,
            },
            Line { label: "from send time".into(), points: pairs(&stats.sent_curve), color: "#1f77b4", dashed: true },
        ];
        if let Some(b) = baseline.and_then(|b| b.classes.get(&class)) {
            lines.push(Line {
                label: "baseline, from due time".into(),
                points: pairs(&b.corrected_curve),
                color: "#999",
                dashed: false,
            });
        }
        body.push_str(&chart(&format!("{class}: latency by percentile"), "percentile", "ms", &lines, true));
    }
    body.push_str("</div></section>");
    body
}

/// Throughput, errors, CPU and memory over the steady state.
fn timeline_section(run: &Summary, baseline: Option<&Summary>) -> String {
    let mut body = String::new();
    body.push_str("<section><h2>Over the steady state</h2><div class=charts>");
    let t = &run.timeline;
    let mut rate_lines = vec![
        Line {
            label: "succeeded requests/s".into(),
            points: t.iter().map(|p| (f64::from(p.t_s), p.requests.saturating_sub(p.errors) as f64)).collect(),
            color: "#2ca02c",
            dashed: false,
        },
        Line {
            label: "errors/s".into(),
            points: t.iter().map(|p| (f64::from(p.t_s), p.errors as f64)).collect(),
            color: "#d62728",
            dashed: false,
        },
    ];
    if let Some(b) = baseline {
        rate_lines.push(Line {
            label: "baseline succeeded/s".into(),
            points: b.timeline.iter().map(|p| (f64::from(p.t_s), p.requests.saturating_sub(p.errors) as f64)).collect(),
            color: "#999",
            dashed: true,
        });
    }
    body.push_str(&chart("throughput and errors (by due second)", "seconds", "per second", &rate_lines, false));
    let cpu: Vec<(f64, f64)> = t.iter().filter_map(|p| p.server_cpu_cores.map(|c| (f64::from(p.t_s), c))).collect();
    let rss: Vec<(f64, f64)> =
        t.iter().filter_map(|p| p.server_rss_bytes.map(|b| (f64::from(p.t_s), b as f64 / 1048576.0))).collect();
    body.push_str(&chart(
        "service CPU",
        "seconds",
        "cores",
        &[Line { label: format!("CPU ({})", run.server.source), points: cpu, color: "#9467bd", dashed: false }],
        false,
    ));
    body.push_str(&chart(
        "service memory",
        "seconds",
        "MiB resident",
        &[Line { label: "RSS".into(), points: rss, color: "#8c564b", dashed: false }],
        false,
    ));
    body.push_str("</div></section>");
    body
}

/// The hit ratio of each cache family, and of the families the target judges.
fn cache_section(run: &Summary, baseline: Option<&Summary>) -> String {
    let mut body = String::new();
    body.push_str("<section><h2>Cache hit ratio</h2><table><tr><th>family</th><th>hits</th><th>misses</th><th>ratio</th><th></th></tr>");
    let families = run
        .cache
        .families
        .iter()
        .map(|(f, c)| (f.as_str(), c))
        .chain([(DATA_TOTAL, &run.cache.data), (ALL_TOTAL, &run.cache.total)]);
    for (family, c) in families {
        let ratio = c.ratio.unwrap_or(0.0);
        let base = baseline
            .and_then(|b| match family {
                DATA_TOTAL => Some(&b.cache.data),
                ALL_TOTAL => Some(&b.cache.total),
                _ => b.cache.families.get(family),
            })
            .and_then(|b| b.ratio)
            .map(|r| format!("<span class=base> / {:.1} %</span>", r * 100.0))
            .unwrap_or_default();
        let _ = write!(
            body,
            r##"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{base}</td><td><svg width="200" height="10"><rect width="200" height="10" fill="#eee"/><rect width="{:.0}" height="10" fill="#17becf"/></svg></td></tr>"##,
            esc(family),
            c.hits,
            c.misses,
            c.ratio.map_or("–".to_owned(), |r| format!("{:.1} %", r * 100.0)),
            ratio * 200.0
        );
    }
    let _ = write!(
        body,
        "</table><p class=note>The cache-hit target judges the data families together ({}); the permission cache \
         (<code>user_perm</code>) is shown apart.</p></section>",
        crate::DATA_FAMILIES.join(", ")
    );
    body
}

/// The service's and the load generator's CPU and memory, and what the profiler cost.
fn resources_section(run: &Summary) -> String {
    let mut body = String::new();
    let cores = |c: Option<f64>| c.map_or("–".to_owned(), |c| format!("{c:.2}"));
    let mib = |b: Option<u64>| b.map_or("–".to_owned(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
    let _ = write!(
        body,
        "<section><h2>Resources</h2><table><tr><th></th><th>CPU mean</th><th>CPU max</th><th>RSS mean</th><th>RSS max</th></tr>\
         <tr><td>service ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\
         <tr><td>load generator</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
         <p class=note>CPU in cores. Service CPU per request: {}. Machine: {} cores, {:.1} GiB; busy {} on average. \
         The gate's service CPU and memory fractions are of the machine's {} cores and of {} ({:.1} GiB), which the \
         service shares with the load generator{}: the machine's busy time above counts them all. \
         Load generator's wake-ups after their due time: {}.</p>{}</section>",
        esc(&run.server.source),
        cores(run.server.process.cpu_cores_mean),
        cores(run.server.process.cpu_cores_max),
        mib(run.server.process.rss_bytes_mean),
        mib(run.server.process.rss_bytes_max),
        cores(run.loadtest.cpu_cores_mean),
        cores(run.loadtest.cpu_cores_max),
        mib(run.loadtest.rss_bytes_mean),
        mib(run.loadtest.rss_bytes_max),
        run.server.cpu_us_per_request.map_or("–".to_owned(), |us| format!("{us:.0} µs")),
        run.machine.cores,
        run.machine.memory_bytes as f64 / (1u64 << 30) as f64,
        run.machine.cpu_busy_mean.map_or("–".to_owned(), |b| format!("{:.0} %", b * 100.0)),
        run.machine.cores,
        run.machine.service_memory_of(),
        run.machine.service_memory_bytes() as f64 / (1u64 << 30) as f64,
        match run.run.backend.as_str() {
            "containers" => " and with PostgreSQL and Redis in their containers",
            "external" => " and with PostgreSQL and Redis when they run on this machine",
            _ => "",
        },
        run.pacing.map_or("–".to_owned(), |p| format!("p50 {:.2} ms, p99 {:.2} ms", p.p50_ms, p.p99_ms)),
        run.server.profiler.map_or(String::new(), |p| format!(
            "<p class=note>{p}. The profiler's sample table stays with the process; its seconds are left out of the \
             CPU per request.</p>"
        )),
    );
    body
}

/// The flamegraph and, with a baseline, the differential one.
fn profile_section(run: &Summary, differential: Option<Result<&str, &str>>) -> String {
    let mut body = String::new();
    body.push_str("<section><h2>CPU profile of the service</h2>");
    match &run.artifacts.flamegraph {
        Some(path) => {
            let _ = write!(
                body,
                r#"<p><a href="{0}">{0}</a> (open it for the interactive flamegraph)</p><img class=flame src="{0}" alt="flamegraph">"#,
                esc(path)
            );
        }
        None => {
            let _ =
                write!(body, "<p class=note>{}</p>", esc(run.artifacts.flamegraph_note.as_deref().unwrap_or("none")));
        }
    }
    match differential {
        Some(Ok(path)) => {
            let _ = write!(
                body,
                r#"<h3>Against the baseline</h3><p class=note>This run's frames, red where they took a larger share of the samples than in the baseline, blue where a smaller one (both normalised to the same total). <a href="{0}">{0}</a></p><img class=flame src="{0}" alt="differential flamegraph">"#,
                esc(path)
            );
        }
        Some(Err(why)) => {
            let _ = write!(body, "<p class=note>No differential flamegraph: {}</p>", esc(why));
        }
        None => {}
    }
    body.push_str("</section>");
    body
}

fn pairs(points: &[[f64; 2]]) -> Vec<(f64, f64)> {
    points.iter().map(|p| (p[0], p[1])).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_element_the_report_opens_it_closes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines");
        let run = crate::Summary::read(&dir.join("smoke-embedded.json")).unwrap();
        let base = crate::Summary::read(&dir.join("peak-external.json")).unwrap();
        let verdict = crate::verdict::judge(&run, Some(&base));
        let html = super::report(&run, &verdict, Some(&base), Some(Ok("flamegraph-diff.svg")));
        for tag in ["table", "section", "figure", "svg", "p", "tr"] {
            let opened = html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
            let closed = html.matches(&format!("</{tag}>")).count();
            assert_eq!(opened, closed, "<{tag}> opened {opened} times, closed {closed}");
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(super::ticks(95.0), vec![0.0, 50.0, 100.0]);
        assert_eq!(super::ticks(7.3), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(super::ticks(0.0), vec![0.0, 1.0]);
    }
}
