//! `cargo xtask compare A B`: two run summaries side by side.

use std::path::PathBuf;

/// Show two runs' summaries (summary.json, or the run folders holding them) side by side.
#[derive(clap::Args)]
pub(crate) struct Compare {
    a: PathBuf,
    b: PathBuf,
}

impl Compare {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let read = |p: &PathBuf| {
            let file = if p.is_dir() { p.join("summary.json") } else { p.clone() };
            fwb_reports::Summary::read(&file).map_err(anyhow::Error::msg)
        };
        print!("{}", fwb_reports::render::side_by_side(&read(&self.a)?, &read(&self.b)?));
        Ok(())
    }
}
