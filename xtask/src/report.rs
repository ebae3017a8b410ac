//! `cargo xtask report RUN [--baseline SUMMARY]`: judge a finished run again and rewrite its verdict,
//! `summary.md` and `report.html` (after changing a baseline, or the report's layout).

use std::path::PathBuf;

/// Re-judge a run folder and rewrite its verdict.json, summary.md and report.html.
#[derive(clap::Args)]
pub(crate) struct Report {
    /// The run folder (holding summary.json).
    run: PathBuf,
    /// A summary.json of an earlier run to compare with.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

impl Report {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let summary = fwb_reports::Summary::read(&self.run.join("summary.json")).map_err(anyhow::Error::msg)?;
        let baseline = match &self.baseline {
            Some(path) => Some((fwb_reports::Summary::read(path).map_err(anyhow::Error::msg)?, path.as_path())),
            None => None,
        };
        crate::perf::write_verdict(&self.run, &summary, baseline.as_ref().map(|(b, p)| (b, *p)))
    }
}
