//! Flamegraphs from folded stacks (inferno): a run's own, and a differential one of a run against its baseline.
//!
//! The service hands out folded stacks (`/debug/pprof/profile?format=folded`) and the drawing happens here, in the
//! load generator or the gate, so the profiled process spends nothing on it.

use std::io::Read as _;
use std::path::Path;

/// A flamegraph SVG of `folded`.
pub fn render(folded: &str, title: &str) -> Result<Vec<u8>, String> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg).map_err(|e| e.to_string())?;
    Ok(svg)
}

/// A differential flamegraph: the frames of `after`, sized by its samples, red where they took a larger share of
/// the samples than in `before` and blue where a smaller one. Both profiles are normalised to the same total, so
/// a longer or busier capture does not read as a regression.
pub fn differential(before: &str, after: &str, title: &str) -> Result<Vec<u8>, String> {
    let options = inferno::differential::Options { normalize: true, ..Default::default() };
    let mut diff = Vec::new();
    inferno::differential::from_readers(options, before.as_bytes(), after.as_bytes(), &mut diff)
        .map_err(|e| e.to_string())?;
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.subtitle = Some("red: a larger share of the samples than in the baseline; blue: a smaller one".into());
    let mut svg = Vec::new();
    inferno::flamegraph::from_reader(&mut options, diff.as_slice(), &mut svg).map_err(|e| e.to_string())?;
    Ok(svg)
}

/// Folded stacks from a file, gzip'd when its name ends in `.gz` (as committed baselines keep them).
pub fn read_folded(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice()).read_to_string(&mut text)?;
        Ok(text)
    } else {
        String::from_utf8(bytes).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_grew_is_drawn_red_in_the_differential() {
        let before = "main;serve;hash 10\nmain;serve;send 90\n";
        let after = "main;serve;hash 60\nmain;serve;send 90\n";
        let svg = String::from_utf8(differential(before, after, "against the baseline").unwrap()).unwrap();
        let hash = svg.find("<title>hash").expect("the hash frame is drawn");
        // inferno colours a frame that grew in red (rgb(255,…)) and one that shrank in blue (rgb(…,255)).
        let fill = &svg[hash..][..svg[hash..].find("</g>").unwrap()];
        assert!(fill.contains("fill=\"rgb(255,"), "{fill}");
        let plain = String::from_utf8(render(after, "a run").unwrap()).unwrap();
        assert!(plain.contains("<svg") && plain.contains("send"));
    }
}
