//! File names and tags as the service stores them, and the `Content-Disposition` they are served under.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Longest stored name, in bytes; longer names are cut at a character boundary.
const MAX_NAME_BYTES: usize = 255;
const MAX_TAGS: usize = 32;
const MAX_TAG_CHARS: usize = 64;

/// Makes a client-supplied name safe to store and to put in a header.
///
/// Keeps the last path component only (both `/` and `\` separate), drops control characters
/// (CR/LF included), trims dots and spaces at the ends so `..` cannot survive, keeps all other UTF-8.
/// Returns `None` when nothing usable is left.
pub(crate) fn sanitize_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|&c| !is_invisible(c)).collect();
    let at_edge = |c: char| c == '.' || c.is_whitespace();
    let trimmed = cleaned.trim_matches(at_edge);
    if trimmed.is_empty() {
        return None;
    }
    let mut end = trimmed.len().min(MAX_NAME_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    // Cutting may have made a dot or a space the last character again (found by fuzzing).
    let cut = trimmed[..end].trim_end_matches(at_edge);
    Some(cut.to_owned())
}

/// Characters a name must not hold: controls (CR/LF included), format characters (Unicode's `Cf`: the bidi
/// overrides that make `a\u{202e}fdp.exe` display as `aexe.pdf`, zero-width spaces and joiners, soft hyphens)
/// and line or paragraph separators. They are invisible or move other text, so a name could pass for another.
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// Normalises tags: trimmed, lowercase, no control or invisible characters, deduplicated, sorted.
pub(crate) fn normalize_tags<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for tag in raw {
        let tag = tag.trim().to_lowercase();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(is_invisible) {
            return Err(format!("tag {tag:?} must be at most {MAX_TAG_CHARS} printable characters"));
        }
        tags.push(tag);
    }
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    Ok(tags)
}

/// Characters that RFC 5987 `attr-char` allows unencoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="ascii fallback"; filename*=UTF-8''percent-encoded`.
///
/// The fallback replaces non-ASCII, quotes, backslashes and `%` (which some clients decode) with `_`,
/// so old clients get a safe name and new ones the exact one.
pub(crate) fn content_disposition(name: &str) -> String {
    // Names stored before invisible characters were removed on the way in lose them on the way out.
    let name: String = name.chars().filter(|&c| !is_invisible(c)).collect();
    let name = name.as_str();
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() && !matches!(c, '"' | '\\' | '%') { c } else { '_' })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A user name: 1 to 64 letters, digits, '.', '_' or '-'.
pub(crate) fn validate_user_name(name: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err("user names are 1-64 letters, digits, '.', '_' or '-'") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_and_control_characters_are_removed() {
        assert_eq!(sanitize_file_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitize_file_name("C:\\Users\\x\\evil.exe").as_deref(), Some("evil.exe"));
        assert_eq!(sanitize_file_name("a\r\nSet-Cookie: x").as_deref(), Some("aSet-Cookie: x"));
        assert_eq!(sanitize_file_name(".."), None);
        assert_eq!(sanitize_file_name("  "), None);
        assert_eq!(sanitize_file_name("보고서 2026.pdf").as_deref(), Some("보고서 2026.pdf"));
    }

    #[test]
    fn bidi_overrides_and_zero_width_characters_are_removed() {
        assert_eq!(sanitize_file_name("a\u{202e}fdp.exe").as_deref(), Some("afdp.exe"));
        assert_eq!(sanitize_file_name("in\u{200b}voice\u{2066}.pdf\u{2069}").as_deref(), Some("invoice.pdf"));
        assert_eq!(sanitize_file_name("\u{feff}\u{200d}\u{2028}"), None);
        assert_eq!(sanitize_file_name("soft\u{ad}hyphen").as_deref(), Some("softhyphen"));
        assert!(normalize_tags(["q\u{202e}3"]).is_err());
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = "가".repeat(200);
        let cut = sanitize_file_name(&name).unwrap();
        assert!(cut.len() <= MAX_NAME_BYTES);
        assert!(cut.chars().all(|c| c == '가'));
    }

    #[test]
    fn a_name_cut_to_length_does_not_end_in_a_space_or_dot() {
        let name = format!("{} .x", "a".repeat(MAX_NAME_BYTES - 2));
        assert_eq!(sanitize_file_name(&name).unwrap(), "a".repeat(MAX_NAME_BYTES - 2));
        let name = format!("{}..{}", "b".repeat(MAX_NAME_BYTES - 1), "c".repeat(10));
        assert_eq!(sanitize_file_name(&name).unwrap(), "b".repeat(MAX_NAME_BYTES - 1));
    }

    #[test]
    fn tags_are_normalized() {
        assert_eq!(normalize_tags([" B", "a", "b", ""]).unwrap(), vec!["a", "b"]);
        assert!(normalize_tags(["x\ny"]).is_err());
    }

    #[test]
    fn disposition_has_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("say \"hi\" 한.txt"),
            "attachment; filename=\"say _hi_ _.txt\"; filename*=UTF-8''say%20%22hi%22%20%ED%95%9C.txt"
        );
    }
}
