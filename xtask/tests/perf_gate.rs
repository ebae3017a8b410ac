//! `cargo xtask perf` end to end on the embedded backend: a scenario with one impossible target fails the gate,
//! naming that check. Needs the release binaries (`.ci/run` builds them with the smoke gate, then runs this):
//!
//!     cargo build --release -p filewallball -p fwb-loadtest && cargo test -p xtask --test perf_gate -- --ignored

use std::process::Command;

const TINY: &str = r#"
name = "tiny"
users = 5
rate = 20.0
ramp_up_s = 1
warm_up_s = 1
steady_s = 4
[mix.get_metadata]
weight = 3.0
[mix.download]
weight = 1.0
[uploads]
sizes = [{ size = "4 KiB", weight = 1.0 }]
[seed]
accounts = 2
files = 10
image_fraction = 0.0
zipf_exponent = 1.0
sizes = [{ size = "4 KiB", weight = 1.0 }]
[targets]
# No service answers in a microsecond: this check must fail, and only this one.
p95_ms = { api = 0.001, download = 5000.0 }
max_error_rate = 0.001
min_achieved_rate = 0.9
"#;

#[test]
#[ignore = "needs the release binaries of filewallball and fwb-loadtest"]
fn an_impossible_target_fails_the_gate_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tiny.toml");
    std::fs::write(&scenario, TINY).unwrap();
    let out = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["perf", "--backend", "embedded", "--no-build", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .env_remove("FWB_DATABASE_URL")
        .env_remove("FWB_REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the gate passed:\n{stdout}\n{stderr}");
    let failed: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(failed.len(), 1, "{stderr}");
    assert!(failed[0].starts_with("FAIL api p95 latency:"), "{stderr}");
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
    assert!(!stderr.contains("backtrace"), "a failed gate is a verdict, not a crash:\n{stderr}");
    // The run folder holds what a person looks at.
    for file in ["summary.json", "verdict.json", "summary.md", "report.html", "service.log"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    // The service is gone: nothing listens on the port the summary names.
    let summary = fwb_reports::Summary::read(&out.join("summary.json")).unwrap();
    let addr = summary.run.target_url.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect(addr).is_err(), "the service still answers at {addr}");
}
