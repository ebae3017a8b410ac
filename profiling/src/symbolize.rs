//! Stacks as raw addresses in the sampled process, named in another one.
//!
//! The sampled process writes what it has without reading any debug information: the code segments it has
//! mapped (address range, load bias, GNU build id, file) and, per distinct stack, the return addresses from the
//! root to the leaf. [`symbolize`] reads the same files from disk (so it runs on the same machine, or beside a copy
//! of the binary at the same path): each file, a `FILE.debug` beside it (the full binary, when the process runs a
//! copy stripped of its debug information), or its detached debug information under `/usr/lib/debug/.build-id`
//! (what Debian's `-dbg` packages install), and gives the folded stacks a flamegraph is drawn from.
//!
//! ```text
//! # fwb-profile addresses 1
//! # code 55d0c8a00000 55d0c9e41000 55d0c89c0000 93ac61ec5a8eb1396f9fbd350e3169a558528a40 /usr/local/bin/fwb-service
//! tokio-runtime-w;0x7f3b2c229d8f;0x55d0c8b1f00a;…;0x55d0c9a0c511 3
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use findshlibs::{Segment as _, SharedLibrary as _, SharedLibraryId, TargetSharedLibrary};

const HEADER: &str = "# fwb-profile addresses 1";

/// The frame of the profiler's own signal handler: it, what it called, and the signal trampoline that called it
/// are left out, as pprof-rs does.
const SIGNAL_HANDLER: &str = "perf_signal_handler";

/// The capture as text: the mapped code segments, then one line per distinct stack (root first) and its count.
pub(crate) fn addresses(report: &pprof::UnresolvedReport) -> String {
    let mut out = format!("{HEADER}\n");
    TargetSharedLibrary::each(|library| {
        let path = match library.name().to_string_lossy() {
            // The main program is listed without a name.
            name if name.is_empty() => std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            name => name.into_owned(),
        };
        let bias = library.virtual_memory_bias().0;
        let id = match library.id() {
            Some(SharedLibraryId::GnuBuildId(bytes)) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            _ => "-".to_owned(),
        };
        for segment in library.segments().filter(|s| s.is_code()) {
            let start = segment.actual_virtual_memory_address(library).0;
            let _ = writeln!(out, "# code {start:x} {:x} {bias:x} {id} {path}", start + segment.len());
        }
    });
    let mut stacks: BTreeMap<String, isize> = BTreeMap::new();
    for (frames, count) in &report.data {
        let name = String::from_utf8_lossy(&frames.thread_name[..frames.thread_name_length]);
        let mut line = if name.is_empty() { frames.thread_id.to_string() } else { clean(&name) };
        for frame in frames.frames.iter().rev() {
            let _ = write!(line, ";{:#x}", frame.ip);
        }
        *stacks.entry(line).or_default() += count;
    }
    for (stack, count) in stacks {
        let _ = writeln!(out, "{stack} {count}");
    }
    out
}

/// A thread's name as one folded-stack field.
fn clean(name: &str) -> String {
    name.chars().map(|c| if c == ';' || c.is_whitespace() { '_' } else { c }).collect()
}

/// What [`symbolize`] made of a capture.
#[derive(Debug, Default)]
pub struct Symbolized {
    /// Folded stacks, one line per distinct stack, sorted.
    pub folded: String,
    /// Distinct frames (addresses) that got no name: shown as `[FILE]` (no symbol in it: the vDSO, a stripped
    /// library) or as their address (in no mapped file).
    pub unnamed: usize,
    /// Distinct frames in all.
    pub frames: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    #[error("not an address profile (its first line is not {HEADER:?})")]
    NotAddresses,
    #[error("line {0}: {1}")]
    Malformed(usize, String),
}

struct Code {
    start: u64,
    end: u64,
    bias: u64,
    /// Where its names may be read, in order.
    files: Vec<PathBuf>,
}

/// Where Debian (and most distributions) keep a library's detached debug information, by GNU build id.
const DEBUG_DIR: &str = "/usr/lib/debug/.build-id";

/// Names the frames of an [`Format::Addresses`](crate::Format::Addresses) capture from the mapped files' debug
/// information and symbol tables (inlined calls included), giving folded stacks like [`Format::Folded`]'s.
pub fn symbolize(text: &str) -> Result<Symbolized, SymbolizeError> {
    let mut lines = text.lines().enumerate();
    if lines.next().map(|(_, l)| l.trim_end()) != Some(HEADER) {
        return Err(SymbolizeError::NotAddresses);
    }
    let mut code = Vec::new();
    let mut stacks = Vec::new();
    for (i, line) in lines {
        let bad = |what: &str| SymbolizeError::Malformed(i + 1, what.to_owned());
        if let Some(rest) = line.strip_prefix("# code ") {
            let mut fields = rest.splitn(5, ' ');
            let mut hex =
                || fields.next().and_then(|f| u64::from_str_radix(f, 16).ok()).ok_or_else(|| bad("an address"));
            let (start, end, bias) = (hex()?, hex()?, hex()?);
            let id = fields.next().ok_or_else(|| bad("a build id"))?;
            let path = fields.next().filter(|p| !p.is_empty()).ok_or_else(|| bad("a path"))?;
            // Where debug information is likeliest first: the full copy beside a file that runs stripped of it, the
            // detached debug information by build id, then the file itself.
            let mut files = vec![PathBuf::from(format!("{path}.debug"))];
            if id.len() > 2 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                files.push(PathBuf::from(format!("{DEBUG_DIR}/{}/{}.debug", &id[..2], &id[2..])));
            }
            files.push(PathBuf::from(path));
            code.push(Code { start, end, bias, files });
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let (stack, count) = line.rsplit_once(' ').ok_or_else(|| bad("a stack and its count"))?;
            let count: u64 = count.parse().map_err(|_| bad("a count"))?;
            let mut fields = stack.split(';');
            let thread = fields.next().unwrap_or_default().to_owned();
            let ips = fields
                .map(|f| f.strip_prefix("0x").and_then(|h| u64::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| bad("addresses"))?;
            stacks.push((thread, ips, count));
        }
    }
    let mut names = Names { code, loaders: HashMap::new(), frames: HashMap::new(), unnamed: Default::default() };
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let mut kept = std::collections::HashSet::new();
    for (thread, ips, count) in stacks {
        // The unwinder ends a stack with a null return address.
        let mut ips: Vec<u64> = ips.into_iter().filter(|&ip| ip != 0).collect();
        for &ip in &ips {
            names.resolve(ip);
        }
        // Leaf side: the handler, everything it called and the trampoline that called it.
        if let Some(handler) = ips.iter().position(|ip| names.frames[ip].iter().any(|n| n == SIGNAL_HANDLER)) {
            ips.truncate(handler.saturating_sub(1));
        }
        let mut line = thread;
        for name in ips.iter().flat_map(|ip| &names.frames[ip]) {
            line.push(';');
            line.push_str(name);
        }
        kept.extend(ips);
        *folded.entry(line).or_default() += count;
    }
    let unnamed = kept.iter().filter(|ip| names.unnamed.contains(ip)).count();
    let mut out = String::new();
    for (stack, count) in folded {
        let _ = writeln!(out, "{stack} {count}");
    }
    Ok(Symbolized { folded: out, unnamed, frames: kept.len() })
}

/// Frame names by address, each file's debug information loaded once.
struct Names {
    code: Vec<Code>,
    loaders: HashMap<PathBuf, Option<addr2line::Loader>>,
    /// The names at one address, outermost first (a call and the calls inlined into it).
    frames: HashMap<u64, Vec<String>>,
    unnamed: std::collections::HashSet<u64>,
}

impl Names {
    fn resolve(&mut self, ip: u64) {
        if self.frames.contains_key(&ip) {
            return;
        }
        let code = self.code.iter().find(|c| (c.start..c.end).contains(&ip));
        let names = code.map(|c| Self::lookup(&mut self.loaders, c, ip)).unwrap_or_default();
        let names = if names.is_empty() {
            self.unnamed.insert(ip);
            vec![Self::unnamed(code, ip)]
        } else {
            names
        };
        self.frames.insert(ip, names);
    }

    /// A frame without a name: its file (as `[FILE]`, the vDSO has none on disk), or its address.
    fn unnamed(code: Option<&Code>, ip: u64) -> String {
        match code.and_then(|c| c.files.last()) {
            Some(file) => format!("[{}]", file.file_name().map_or(file.as_os_str(), |n| n).to_string_lossy()),
            None => format!("{ip:#x}"),
        }
    }

    /// The names at `ip` in `code`, from the first of its files that has them.
    fn lookup(loaders: &mut HashMap<PathBuf, Option<addr2line::Loader>>, code: &Code, ip: u64) -> Vec<String> {
        // A return address points after its call: look up the call itself, as backtraces do.
        let probe = ip.wrapping_sub(code.bias).saturating_sub(1);
        for file in &code.files {
            let loader = loaders.entry(file.clone()).or_insert_with(|| addr2line::Loader::new(file).ok());
            if let Some(loader) = loader {
                let names = Self::names_in(loader, probe);
                if !names.is_empty() {
                    return names;
                }
            }
        }
        Vec::new()
    }

    fn names_in(loader: &addr2line::Loader, probe: u64) -> Vec<String> {
        let mut names = Vec::new();
        if let Ok(mut frames) = loader.find_frames(probe) {
            while let Ok(Some(frame)) = frames.next() {
                if let Some(name) = frame.function.as_ref().and_then(|f| f.demangle().ok()) {
                    names.push(name.into_owned());
                }
            }
        }
        if names.is_empty()
            && let Some(symbol) = loader.find_symbol(probe)
        {
            names.push(addr2line::demangle_auto(symbol.into(), None).into_owned());
        }
        // Innermost first from the lookup; stacks are written root first.
        names.reverse();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_captures_are_refused_with_their_line() {
        assert!(matches!(symbolize("a;b 1\n"), Err(SymbolizeError::NotAddresses)));
        let bad = format!("{HEADER}\n# code 10 zz 0 - /bin/true\n");
        assert!(matches!(symbolize(&bad), Err(SymbolizeError::Malformed(2, _))), "{:?}", symbolize(&bad));
        let bad = format!("{HEADER}\nmain;0x10;nothex 1\n");
        assert!(matches!(symbolize(&bad), Err(SymbolizeError::Malformed(2, _))));
    }

    #[test]
    fn addresses_outside_every_mapped_file_keep_their_address_and_are_counted() {
        let text = format!(
            "{HEADER}\n# code 1000 2000 0 - /nonexistent/binary\nmain;0x0;0x1010;0x5000 2\nmain;0x1010;0x5000 1\n"
        );
        let s = symbolize(&text).unwrap();
        assert_eq!(s.folded, "main;[binary];0x5000 3\n");
        assert_eq!((s.unnamed, s.frames), (2, 2));
    }
}
