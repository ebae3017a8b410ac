//! `cargo xtask flamegraph --seconds N [--url URL]`: a CPU flamegraph of a running service, written to
//! `reports/runs/<id>/flamegraph.svg`. The perf gate calls the same endpoint during its steady state.

use anyhow::Context as _;
use xshell::{Shell, cmd};

/// Capture a CPU flamegraph of a running service.
#[derive(clap::Args)]
pub(crate) struct Flamegraph {
    /// How long to sample (1 to 120 s).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Samples per second (the kernel tick caps it near 250).
    #[arg(long, default_value_t = 99)]
    frequency: u32,
    /// The service to profile.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin API key; defaults to the FWB_ADMIN_KEY environment variable.
    #[arg(long, env = "FWB_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
}

impl Flamegraph {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let dir = crate::run_dir(sh, "flamegraph")?;
        let out = dir.join("flamegraph.svg");
        let url = format!(
            "{}/debug/pprof/profile?seconds={}&frequency={}&format=svg",
            self.url.trim_end_matches('/'),
            self.seconds,
            self.frequency
        );
        let auth = format!("Authorization: Bearer {}", self.admin_key);
        eprintln!("profiling {} for {} s…", self.url, self.seconds);
        // curl keeps this crate free of an HTTP client; --fail-with-body shows the service's error JSON.
        cmd!(sh, "curl --silent --show-error --fail-with-body -o {out} -H {auth} {url}")
            .quiet()
            .run()
            .with_context(|| format!("fetching {url}"))?;
        println!("{}", out.display());
        Ok(())
    }
}
