//! CPU profiles of the running process: sampled with pprof-rs for a given time and frequency, returned as a
//! flamegraph SVG, as a gzip'd pprof protobuf (what `go tool pprof` and speedscope open), as folded stacks, or as
//! raw return addresses to be named elsewhere ([`Format::Addresses`], then [`symbolize`]).
//!
//! pprof-rs samples with SIGPROF for the whole process, so only one capture runs at a time: a second one
//! is refused with [`ProfileError::Busy`] rather than queued. Sampling costs the process little while it
//! waits. Naming frames is what costs: it parses the binary's debug information into memory (for the release
//! service, ~40 MiB of DWARF became ~210 MiB of RSS that stays with the process). pprof-rs names one backtrace
//! when it starts, whatever the format, so the debug information is loaded by every capture of a binary that
//! carries it: a process under measurement runs without it (`objcopy --strip-debug`, the full binary kept beside
//! it as `NAME.debug`, which is how `cargo xtask perf` runs the service), takes its profile as
//! [`Format::Addresses`], and [`symbolize`] names the stacks in another process, from the files on disk. The named
//! formats work on any binary: without debug information their frames are the symbol table's functions, with no
//! inlined calls.
//!
//! Also here: the tokio-console layer ([`console_layer`]).

#[cfg(feature = "criterion")]
pub mod bench;
pub mod console;
mod symbolize;
pub use console::console_layer;
pub use symbolize::{Symbolized, symbolize};

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pprof::protos::Message as _;

/// One capture at a time, process-wide (pprof-rs has one global profiler).
static BUSY: AtomicBool = AtomicBool::new(false);

/// Frames of the sampling machinery itself, left out of reports.
const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];

/// How a profile is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An interactive flamegraph (inferno).
    Svg,
    /// A gzip'd `perftools.profiles.Profile` protobuf.
    Pprof,
    /// Folded stacks (`thread;outer;…;inner COUNT` per line, sorted): what a flamegraph is drawn from, and what
    /// two profiles are compared by (a differential flamegraph). Rendering is left to the caller, off this process.
    Folded,
    /// Folded stacks of return addresses, unnamed, headed by where each code segment of the process is mapped
    /// (text, see [`symbolize`]): nothing is symbolized in this process.
    Addresses,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("a profile is already being captured")]
    Busy,
    #[error("profiler: {0}")]
    Profiler(#[from] pprof::Error),
    #[error("rendering the profile: {0}")]
    Render(String),
}

struct Claim;

impl Claim {
    fn take() -> Result<Self, ProfileError> {
        BUSY.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Claim)
            .map_err(|_| ProfileError::Busy)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// Samples the whole process for `duration` at `frequency` Hz (the kernel tick caps what is delivered,
/// near 250 Hz on common kernels) and renders the result.
pub async fn capture(duration: Duration, frequency: i32, format: Format) -> Result<Vec<u8>, ProfileError> {
    let claim = Claim::take()?;
    // Starting the profiler resolves one backtrace, which loads the binary's debug information (seconds and
    // hundreds of MiB for a release binary that carries it): off the runtime's threads.
    let guard = tokio::task::spawn_blocking(move || {
        let guard = pprof::ProfilerGuardBuilder::default().frequency(frequency).blocklist(BLOCKLIST).build()?;
        // The unwinder reads the process's unwind tables the first time it runs, in the signal handler, which
        // must not allocate: run it first here, on this thread, at a point where it is safe to. The timer's first
        // signal comes a whole period (≥ 1 ms) later, and while this handler runs, others skip their sample.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGPROF)
            .map_err(|e| ProfileError::Render(format!("raising SIGPROF: {e}")))?;
        Ok::<_, ProfileError>(guard)
    })
    .await
    .map_err(|e| ProfileError::Render(e.to_string()))??;
    tokio::time::sleep(duration).await;
    tokio::task::spawn_blocking(move || {
        let report = guard.report();
        let bytes = match format {
            Format::Addresses => symbolize::addresses(&report.build_unresolved()?).into_bytes(),
            Format::Folded => folded(&report.build()?).into_bytes(),
            Format::Svg => svg(&report.build()?)?,
            Format::Pprof => pprof_gz(&report.build()?)?,
        };
        drop(guard);
        drop(claim);
        Ok(bytes)
    })
    .await
    .map_err(|e| ProfileError::Render(e.to_string()))?
}

fn svg(report: &pprof::Report) -> Result<Vec<u8>, ProfileError> {
    let mut svg = Vec::new();
    report.flamegraph(&mut svg)?;
    Ok(svg)
}

fn pprof_gz(report: &pprof::Report) -> Result<Vec<u8>, ProfileError> {
    let profile = report.pprof()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec()).map_err(|e| ProfileError::Render(e.to_string()))?;
    gz.finish().map_err(|e| ProfileError::Render(e.to_string()))
}

/// One line per distinct stack, root first, with its sample count; sorted, identical stacks of threads with the
/// same name merged.
fn folded(report: &pprof::Report) -> String {
    use std::fmt::Write as _;
    let mut stacks: std::collections::BTreeMap<String, isize> = std::collections::BTreeMap::new();
    for (frames, count) in &report.data {
        let mut line = frames.thread_name_or_id();
        for symbol in frames.frames.iter().rev().flat_map(|frame| frame.iter().rev()) {
            let _ = write!(line, ";{symbol}");
        }
        *stacks.entry(line).or_default() += count;
    }
    stacks.into_iter().fold(String::new(), |mut out, (stack, count)| {
        let _ = writeln!(out, "{stack} {count}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(until: std::time::Instant) -> u64 {
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        x
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_process_gives_a_flamegraph_and_a_gzipped_profile_and_only_one_at_a_time() {
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let busy = std::thread::spawn(move || spin(until));
        let (svg, second) = tokio::join!(capture(Duration::from_millis(600), 199, Format::Svg), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            capture(Duration::from_millis(100), 99, Format::Svg).await
        });
        assert!(matches!(second, Err(ProfileError::Busy)), "a second capture is refused while one runs");
        let svg = String::from_utf8(svg.unwrap()).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("spin"), "the busy function shows up in the flamegraph");

        // Busy again through the folded and the protobuf captures: the first spinner may be done by now.
        let until = std::time::Instant::now() + Duration::from_millis(2600);
        let busy_again = std::thread::spawn(move || spin(until));
        let folded =
            String::from_utf8(capture(Duration::from_millis(500), 199, Format::Folded).await.unwrap()).unwrap();
        let lines: Vec<&str> = folded.lines().collect();
        assert!(lines.iter().any(|l| l.contains("spin")), "{folded}");
        let stacks: Vec<&str> = lines.iter().filter_map(|l| l.rsplit_once(' ').map(|(stack, _)| stack)).collect();
        assert!(stacks.windows(2).all(|w| w[0] < w[1]), "sorted, each stack once");
        assert!(lines.iter().all(|l| l.rsplit_once(' ').is_some_and(|(_, n)| n.parse::<u64>().is_ok())), "{folded}");

        // Raw addresses, named here from the test binary on disk as another process would name them.
        let raw =
            String::from_utf8(capture(Duration::from_millis(500), 199, Format::Addresses).await.unwrap()).unwrap();
        assert!(raw.starts_with("# fwb-profile addresses 1\n# code "), "{}", &raw[..raw.len().min(300)]);
        assert!(!raw.contains("spin"), "nothing is named in the sampled process");
        let named = symbolize(&raw).unwrap();
        assert!(named.folded.lines().any(|l| l.contains("spin")), "{}", named.folded);
        assert!(!named.folded.contains("perf_signal_handler"), "the profiler's own frames are left out");
        // Only frames with no symbol anywhere (the vDSO's: it has no file) may stay unnamed.
        assert!(
            named.unnamed * 4 < named.frames,
            "{} of {} frames unnamed:\n{}",
            named.unnamed,
            named.frames,
            named.folded
        );

        let pb = capture(Duration::from_millis(300), 99, Format::Pprof).await.unwrap();
        assert_eq!(&pb[..2], &[0x1f, 0x8b], "gzip magic");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&pb[..]), &mut raw).unwrap();
        let profile = pprof::protos::Profile::decode(raw.as_slice()).unwrap();
        assert!(!profile.sample.is_empty());
        busy.join().unwrap();
        busy_again.join().unwrap();
    }
}
