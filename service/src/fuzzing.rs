//! Doors for the fuzz targets (`service/fuzz`) onto the parsers the service owns, each with the properties
//! its output must have whatever the input: the targets feed bytes here and these functions panic when a
//! property breaks. The committed corpora replay through the same doors in `cargo test`
//! ([`tests::the_fuzz_corpora_replay_clean`]). Not an API: hidden from the docs, may change.

use std::time::{Duration, SystemTime};

use headers::ETag;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::Cursor;
use crate::domain::names::{content_disposition, is_invisible, normalize_tags, sanitize_file_name};
use crate::http::conditional::{Precondition, evaluate_preconditions, range_applies, requested_ranges};

/// `Range` against a representation of `size` bytes: what is served never exceeds the file.
pub fn range(value: &[u8], size: u64) {
    let Ok(value) = HeaderValue::from_bytes(value) else { return };
    if let Ok(Some(ranges)) = requested_ranges(&value, size) {
        assert!(!ranges.is_empty() && ranges.len() <= 16, "{} ranges", ranges.len());
        let mut total = 0u64;
        for r in &ranges {
            assert!(r.start() <= r.end() && *r.end() < size, "{r:?} outside {size} bytes");
            total += r.end() - r.start() + 1;
        }
        assert!(total <= size, "ranges add up to {total} of a {size}-byte file");
    }
}

/// Conditional headers (`name: value` lines) against a fixed representation: never a panic, and a 304 only
/// when the client named this version by tag or by a date not before its last change and not in the future.
pub fn conditional(text: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(trim(&line[colon + 1..])))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let etag: ETag = "\"0123abcd\"".parse().expect("a valid entity tag");
    let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let _ = range_applies(&headers, &etag, &headers::LastModified::from(modified));
    if let Ok(Precondition::NotModified) = evaluate_preconditions(&headers, &etag, modified) {
        let named_by_tag = headers.contains_key(http::header::IF_NONE_MATCH);
        let named_by_date = headers.contains_key(http::header::IF_MODIFIED_SINCE);
        assert!(named_by_tag || named_by_date, "304 without a validator: {headers:?}");
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

/// A listing cursor: one that decodes re-encodes to itself, and holds only values a page could end on.
pub fn cursor(text: &str) {
    if let Some(cursor) = Cursor::decode(text) {
        assert_eq!(Cursor::decode(&cursor.encode()).as_ref(), Some(&cursor), "{text}");
    }
}

/// A client's file name: stored names are short, single-component, visible text that makes a valid header.
pub fn name(text: &str) {
    if let Some(name) = sanitize_file_name(text) {
        assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
        assert!(!name.contains(['/', '\\']) && !name.chars().any(is_invisible), "{name:?}");
        assert!(!name.starts_with(['.', ' ']) && !name.ends_with(['.', ' ']), "{name:?}");
        assert_eq!(sanitize_file_name(&name).as_deref(), Some(name.as_str()), "sanitising is idempotent");
        assert!(HeaderValue::try_from(content_disposition(&name)).is_ok(), "{name:?}");
    }
    if let Ok(tags) = normalize_tags(text.split(',')) {
        assert!(tags.len() <= 32 && tags.windows(2).all(|w| w[0] < w[1]), "{tags:?}");
        assert!(tags.iter().all(|t| !t.is_empty() && !t.chars().any(is_invisible)), "{tags:?}");
    }
}

/// Runs one corpus entry of `target` as its fuzz target does.
pub fn replay(target: &str, data: &[u8]) {
    match target {
        "range" => {
            if let [a, b, rest @ ..] = data {
                range(rest, u64::from(u16::from_le_bytes([*a, *b])));
            }
        }
        "conditional" => conditional(data),
        "cursor" => cursor(&String::from_utf8_lossy(data)),
        "name" => name(&String::from_utf8_lossy(data)),
        other => panic!("no fuzz target {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input a fuzz run found interesting is kept in `fuzz/corpus/<target>/` and replayed here, so a
    /// regression in a parser fails the ordinary test suite, without a fuzzer.
    #[test]
    fn the_fuzz_corpora_replay_clean() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut replayed = 0;
        for target in ["range", "conditional", "cursor", "name"] {
            let dir = root.join(target);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                super::replay(target, &bytes);
                replayed += 1;
            }
        }
        assert!(replayed >= 40, "only {replayed} corpus entries: the corpora are missing");
    }
}
