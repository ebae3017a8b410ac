//! Content types, decided from the bytes (magic numbers via `infer`), never from what the client claims;
//! and what is derived from images (`thumbnail`).

pub(crate) mod thumbnail;

/// How many leading bytes are looked at; `infer` needs far fewer for every format it knows.
pub(crate) const SNIFF_LEN: usize = 8192;

/// The content type of a file whose first bytes are `head` (all of them when the file is shorter).
pub(crate) fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head)
        && !weak_match(&kind, head)
    {
        return kind.mime_type().to_owned();
    }
    if looks_like_text(head) { "text/plain".to_owned() } else { "application/octet-stream".to_owned() }
}

/// `infer` names COFF objects and `MZ` executables after their first two bytes, so about one file of random bytes
/// (compressed, encrypted) in 16 000 would be taken for an executable and refused by the deny list; a load test
/// found one. Those count only with the rest of their header: a PE signature where the DOS header points.
fn weak_match(kind: &infer::Type, head: &[u8]) -> bool {
    match kind.extension() {
        "obj" => true,
        "exe" | "dll" => !is_pe(head),
        _ => false,
    }
}

fn is_pe(head: &[u8]) -> bool {
    let Some(offset) = head.get(0x3C..0x40) else { return false };
    let offset = u32::from_le_bytes(offset.try_into().expect("four bytes")) as usize;
    head.get(offset..offset.saturating_add(4)) == Some(b"PE\0\0")
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

    #[test]
    fn two_matching_bytes_do_not_make_an_executable() {
        for magic in [[0x64, 0x86], [0x4C, 0x01], [0x00, 0x02], *b"MZ"] {
            let mut random = blake3::Hasher::new().update(&magic).finalize_xof();
            let mut head = vec![0; 4096];
            random.fill(&mut head);
            head[..2].copy_from_slice(&magic);
            assert_eq!(sniff(&head), "application/octet-stream", "{magic:02x?}");
        }
        // A real PE header still is one.
        let mut pe = vec![0; 512];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert_eq!(sniff(&pe), "application/vnd.microsoft.portable-executable");
    }
}
