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

/// Dots and spaces are trimmed off a name's ends.
fn at_edge(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

/// The names [`sanitize_file_name`] keeps, as a regular expression for the OpenAPI document: after the last `/`
/// or `\`, at least one character that is not invisible, a dot or a space. Like the other patterns here it is
/// built from the sanitiser's own predicates and this build's Unicode tables, so the document and the service
/// cannot disagree.
pub(crate) fn file_name_pattern() -> String {
    let removed = class(|c| c == '/' || c == '\\' || at_edge(c) || is_invisible(c));
    format!("[^{removed}][^/\\\\]*$")
}

/// One tag as [`normalize_tags`] takes it, as a regular expression: blank, or at most [`MAX_TAG_CHARS`] characters
/// once trimmed, none of them invisible.
pub(crate) fn tag_pattern() -> String {
    format!("^{}$", tag_expression(""))
}

/// Comma-separated tags, as an upload takes them: up to [`MAX_TAGS`] of [`tag_pattern`]'s.
pub(crate) fn tag_list_pattern() -> String {
    let tag = tag_expression(",");
    format!("^{tag}(?:,{tag}){{0,{}}}$", MAX_TAGS - 1)
}

/// A tag without anchors, none of whose characters is in `also_excluded`.
fn tag_expression(also_excluded: &str) -> String {
    let space = class(char::is_whitespace);
    let visible = format!("[^{}{also_excluded}]", class(is_invisible));
    let inner = format!("[^{}{also_excluded}]", class(|c| c.is_whitespace() || is_invisible(c)));
    format!("[{space}]*(?:{inner}(?:{visible}{{0,{}}}{inner})?)?[{space}]*", MAX_TAG_CHARS - 2)
}

/// The inside of a regular expression's character class holding exactly the characters `member` picks, as
/// ranges. BMP characters are written `\uXXXX` (ECMA-262, Python and Rust read them alike), the few beyond it as
/// themselves.
fn class(member: impl Fn(char) -> bool) -> String {
    let write = |class: &mut String, code: u32| match char::from_u32(code) {
        Some(c) if code > 0xFFFF => class.push(c),
        _ => class.push_str(&format!("\\u{code:04X}")),
    };
    let mut class = String::new();
    let mut run: Option<(u32, u32)> = None;
    // One past the last code point, so the last run is written too.
    for code in 0..=0x11_0000 {
        if char::from_u32(code).is_some_and(&member) {
            run = Some(run.map_or((code, code), |(first, _)| (first, code)));
        } else if let Some((first, last)) = run.take() {
            write(&mut class, first);
            if last > first {
                class.push('-');
                write(&mut class, last);
            }
        }
    }
    class
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
        // Counted as sent: lowercasing can lengthen a tag (`İ` becomes `i̇`).
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(is_invisible) {
            return Err(format!("tag {tag:?} must be at most {MAX_TAG_CHARS} printable characters"));
        }
        tags.push(tag.to_lowercase());
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
    fn the_documented_pattern_matches_exactly_the_names_that_are_kept() {
        let pattern = regex::Regex::new(&file_name_pattern()).unwrap();
        // Every kind of character the sanitiser treats apart, in the BMP and beyond it, mixed with plain ones.
        let alphabet = [
            'a',
            '가',
            '😀',
            '.',
            ' ',
            '\u{3000}',
            '\u{85}',
            '/',
            '\\',
            '\n',
            '\u{7f}',
            '\u{200b}',
            '\u{202e}',
            '\u{2028}',
            '\u{ad}',
            '\u{e0001}',
            '\u{110bd}',
            '\u{feff}',
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut kept = 0;
        for _ in 0..20_000 {
            let len = next() % 7;
            let name: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let sanitised = sanitize_file_name(&name);
            assert_eq!(pattern.is_match(&name), sanitised.is_some(), "{name:?} became {sanitised:?}");
            kept += usize::from(sanitised.is_some());
        }
        // Both answers were exercised.
        assert!((2_000..18_000).contains(&kept), "{kept} of 20000 names kept");
    }

    #[test]
    fn the_documented_tag_patterns_match_exactly_the_tags_that_are_taken() {
        let (tag, list) = (tag_pattern(), tag_list_pattern());
        let (tag, list) = (regex::Regex::new(&tag).unwrap(), regex::Regex::new(&list).unwrap());
        let alphabet =
            ['a', 'İ', '😀', ',', ' ', '\t', '\n', '\u{3000}', '\u{85}', '\u{200b}', '\u{2028}', '\u{e0001}'];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut taken = 0;
        for _ in 0..20_000 {
            // Mostly short, sometimes around the length limit, with a few pieces.
            let len = if next() % 4 == 0 { 60 + next() % 10 } else { next() % 6 };
            let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let alone = normalize_tags([text.as_str()]).is_ok();
            assert_eq!(tag.is_match(&text), alone, "{text:?} as one tag");
            let pieces = normalize_tags(text.split(',')).is_ok();
            assert_eq!(list.is_match(&text), pieces, "{text:?} as a list");
            taken += usize::from(pieces);
        }
        assert!((2_000..18_000).contains(&taken), "{taken} of 20000 lists taken");
        // Past the number of tags: 33 pieces are refused by the pattern (the service dedups first, so it
        // takes 33 copies of one tag; the pattern is the stricter).
        assert!(list.is_match(&vec!["x"; 32].join(",")) && !list.is_match(&vec!["x"; 33].join(",")));
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
