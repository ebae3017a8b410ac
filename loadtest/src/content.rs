//! The bytes the load test stores, made so that any part of them can be checked later without keeping them:
//! random-looking bytes are the BLAKE3 extendable output of a label, which can be read from any offset.
//! Images are real PNGs (the service thumbnails them), small enough to keep.

use std::io::Cursor;
use std::sync::Arc;

use rand::{Rng, SeedableRng};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// `len` bytes of BLAKE3 XOF output keyed by `label`.
    Stream { label: String, len: u64 },
    /// Bytes kept in memory.
    Bytes(Arc<[u8]>),
}

impl Content {
    pub fn stream(label: impl Into<String>, len: u64) -> Self {
        Content::Stream { label: label.into(), len }
    }

    /// A `side`×`side` PNG whose pixels derive from `label`: deterministic, so a later run makes the same bytes.
    pub fn png(label: &str, side: u32) -> Self {
        let seed = *blake3::hash(label.as_bytes()).as_bytes();
        let mut rng = rand::rngs::StdRng::from_seed(seed);
        let (a, b): ([u8; 3], [u8; 3]) = (rng.random(), rng.random());
        let image = image::RgbImage::from_fn(side, side, |x, y| {
            let mix = |i: usize| {
                let t = (x + y) as f32 / (2 * side) as f32;
                (a[i] as f32 * (1.0 - t) + b[i] as f32 * t) as u8 ^ ((x / 16 + y / 16) % 2 * 24) as u8
            };
            image::Rgb([mix(0), mix(1), mix(2)])
        });
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encoding a PNG in memory cannot fail");
        Content::Bytes(png.into())
    }

    pub fn len(&self) -> u64 {
        match self {
            Content::Stream { len, .. } => *len,
            Content::Bytes(bytes) => bytes.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset`.
    pub fn slice(&self, offset: u64, len: u64) -> Vec<u8> {
        match self {
            Content::Stream { label, .. } => {
                let mut out = vec![0; len as usize];
                let mut reader = blake3::Hasher::new_derive_key("filewallball loadtest content")
                    .update(label.as_bytes())
                    .finalize_xof();
                reader.set_position(offset);
                reader.fill(&mut out);
                out
            }
            Content::Bytes(bytes) => bytes[offset as usize..(offset + len) as usize].to_vec(),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.slice(0, self.len())
    }

    /// The whole content and its BLAKE3, hex (what the service reports as `content_hash`), made once.
    pub fn bytes_and_hash(&self) -> (Vec<u8>, String) {
        let bytes = self.to_vec();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        (bytes, hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_is_the_same_bytes_as_that_part_of_the_whole() {
        let content = Content::stream("seed-00001", 100_000);
        let whole = content.to_vec();
        assert_eq!(content.slice(12_345, 999), whole[12_345..13_344]);
        assert_ne!(Content::stream("seed-00002", 100_000).to_vec(), whole);
    }

    #[test]
    fn images_are_deterministic_pngs() {
        let a = Content::png("seed-00003", 64);
        let (bytes, hash) = a.bytes_and_hash();
        assert_eq!(hash, Content::png("seed-00003", 64).bytes_and_hash().1);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_ne!(hash, Content::png("seed-00004", 64).bytes_and_hash().1);
    }
}
