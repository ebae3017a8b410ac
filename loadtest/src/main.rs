//! `fwb-loadtest --scenario scenarios/peak.toml --target http://HOST:PORT --admin-key KEY --out DIR`

use std::path::PathBuf;

use clap::Parser;

/// Runs a load scenario against a FileWallBall deployment and writes its summary and reports to DIR.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Scenario file (scenarios/*.toml).
    #[arg(long)]
    scenario: PathBuf,
    /// Base URL of the service.
    #[arg(long)]
    target: String,
    /// An admin's API key: seeds users and keys, reads the CPU profile.
    #[arg(long, env = "FWB_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// Where summary.json, goose's reports, histograms and the flamegraph go.
    #[arg(long)]
    out: PathBuf,
    /// The service's process id on this machine: CPU and memory from /proc instead of its /metrics.
    #[arg(long)]
    service_pid: Option<u32>,
    /// What the service stores its data in, recorded in the summary.
    #[arg(long, default_value = "unknown")]
    backend: String,
    /// Do not ask the service for a CPU profile (it costs the service some CPU while it is taken and rendered).
    #[arg(long)]
    no_profile: bool,
    /// Requests per second instead of the scenario's (the summary records the rate used).
    #[arg(long)]
    rate: Option<f64>,
    /// Users instead of the scenario's.
    #[arg(long)]
    users: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = fwb_loadtest::run::Options {
        scenario: cli.scenario,
        target: cli.target,
        admin_key: cli.admin_key,
        out: cli.out,
        service_pid: cli.service_pid,
        backend: cli.backend,
        profile: !cli.no_profile,
        rate: cli.rate,
        users: cli.users,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = runtime.block_on(fwb_loadtest::run::run(&options))?;
    print!("{}", fwb_reports::summary_table(&summary));
    println!("summary: {}", options.out.join("summary.json").display());
    Ok(())
}
