//! The criterion profiler hook: `cargo bench -- --profile-time 10` writes `flamegraph.svg` for each bench
//! into its criterion folder (`target/criterion/<bench>/profile/`).

use std::path::Path;

use criterion::profiler::Profiler;

/// Samples the bench while criterion runs it in profiling mode, then renders a flamegraph.
pub struct FlamegraphProfiler {
    frequency: i32,
    guard: Option<pprof::ProfilerGuard<'static>>,
}

impl FlamegraphProfiler {
    pub fn new(frequency: i32) -> Self {
        Self { frequency, guard: None }
    }
}

impl Profiler for FlamegraphProfiler {
    fn start_profiling(&mut self, _benchmark_id: &str, _benchmark_dir: &Path) {
        self.guard = pprof::ProfilerGuard::new(self.frequency).map_err(|e| eprintln!("profiler: {e}")).ok();
    }

    fn stop_profiling(&mut self, benchmark_id: &str, benchmark_dir: &Path) {
        let Some(guard) = self.guard.take() else { return };
        let written = std::fs::create_dir_all(benchmark_dir).map_err(|e| e.to_string()).and_then(|()| {
            let report = guard.report().build().map_err(|e| e.to_string())?;
            let file = std::fs::File::create(benchmark_dir.join("flamegraph.svg")).map_err(|e| e.to_string())?;
            report.flamegraph(file).map_err(|e| e.to_string())
        });
        match written {
            Ok(()) => eprintln!("flamegraph of {benchmark_id}: {}", benchmark_dir.join("flamegraph.svg").display()),
            Err(e) => eprintln!("no flamegraph for {benchmark_id}: {e}"),
        }
    }
}
