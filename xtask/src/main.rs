//! `cargo xtask <command>`: orchestration only. This file parses flags and dispatches; each command lives in
//! its own module and runs other programs through xshell.

mod compare;
mod console;
mod flamegraph;
mod instructions;
mod perf;
mod report;

use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Parser)]
#[command(about = "FileWallBall's workspace tasks")]
struct Flags {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Flamegraph(flamegraph::Flamegraph),
    Console(console::Console),
    Perf(perf::Perf),
    Compare(compare::Compare),
    Report(report::Report),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, without a backtrace even when RUST_BACKTRACE is set: these are expected failures.
            if e.is::<perf::GateFailed>() {
                eprintln!("perf: {e}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match Flags::parse().command {
        Command::Flamegraph(cmd) => cmd.run(&sh),
        Command::Console(cmd) => cmd.run(&sh),
        Command::Perf(cmd) => cmd.run(&sh),
        Command::Compare(cmd) => cmd.run(),
        Command::Report(cmd) => cmd.run(),
    }
}

/// A cargo command without the variables `cargo run` set for us (`cargo xtask` runs through it): passed on, they
/// differ from a shell's, and build scripts that rerun on them (ring's, on CARGO_MANIFEST_DIR) rebuild half the
/// tree between a build from a shell and one from here.
fn cargo<'a>(sh: &'a Shell, args: &[&str]) -> xshell::Cmd<'a> {
    const SET_BY_CARGO_RUN: [&str; 5] =
        ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"];
    std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .filter(|name| SET_BY_CARGO_RUN.iter().any(|p| name.starts_with(p)))
        .fold(xshell::cmd!(sh, "cargo {args...}"), |cmd, name| cmd.env_remove(name))
}

/// The workspace root (this crate's parent folder), whatever the caller's working directory.
fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

/// `reports/runs/<UTC time>-<what>-<git short sha>`: one folder per run, sortable by time.
fn run_dir(sh: &Shell, what: &str) -> anyhow::Result<std::path::PathBuf> {
    let sha = xshell::cmd!(sh, "git rev-parse --short HEAD").read().unwrap_or_else(|_| "nogit".to_owned());
    let dir = project_root().join("reports/runs").join(run_name(chrono::Utc::now(), what, &sha));
    sh.create_dir(&dir)?;
    Ok(dir)
}

fn run_name(at: chrono::DateTime<chrono::Utc>, what: &str, sha: &str) -> String {
    format!("{}-{what}-{sha}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_folders_sort_by_time_and_name_the_revision() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:05:09Z").unwrap().to_utc();
        assert_eq!(super::run_name(at, "flamegraph", "abc1234"), "20261126T100509Z-flamegraph-abc1234");
    }
}
