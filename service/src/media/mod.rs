//! Content types, decided from the bytes (magic numbers via `infer`), never from what the client claims;
//! and what is derived from images (`thumbnail`).

pub(crate) mod thumbnail;

/// How many leading bytes are looked at; `infer` needs far fewer for every format it knows.
pub(crate) const SNIFF_LEN: usize = 8192;

/// The content type of a file whose first bytes are `head` (all of them when the file is shorter).
pub(crate) fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    if looks_like_text(head) { "text/plain".to_owned() } else { "application/octet-stream".to_owned() }
}

/// UTF-8 without NUL bytes; a character cut off at the end of the head does not count against it.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_magic_numbers() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert_eq!(sniff(&elf), "application/x-executable");
        assert_eq!(sniff("hello, 세계".as_bytes()), "text/plain");
        assert_eq!(sniff(&"세".as_bytes()[..2]), "text/plain");
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff]), "application/octet-stream");
        assert_eq!(sniff(b""), "application/octet-stream");
    }
}
