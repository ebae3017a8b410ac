//! `cargo xtask console`: runs the service (release build, embedded default unless configured otherwise)
//! with the tokio-console layer on, and says how to attach.

use xshell::Shell;

/// Run the service with tokio-console enabled.
#[derive(clap::Args)]
pub(crate) struct Console {
    /// Where tokio-console attaches.
    #[arg(long, default_value = "127.0.0.1:6669")]
    console_addr: String,
}

impl Console {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let addr = self.console_addr;
        eprintln!("attach with:  tokio-console http://{addr}   (cargo install --locked tokio-console)");
        eprintln!("stop with Ctrl-C");
        let _env = sh.push_env("FWB__TELEMETRY__CONSOLE_ADDR", &addr);
        crate::cargo(sh, &["run", "--release", "-p", "filewallball"]).run()?;
        Ok(())
    }
}
