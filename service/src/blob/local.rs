//! Blobs in a local directory: `<dir>/<hh>/<hh>/<hash>`, written through `<dir>/.tmp-*` files.
//!
//! A write goes to a temporary file in the blob directory itself (same filesystem, so the rename is atomic),
//! is fsync'd, then renamed to its hash; the parent directory is fsync'd so the name survives a crash.
//! The temporary file is removed when the writer is dropped unfinished (error, abort, cancelled request).

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::{BlobError, BlobReader, BlobStore, BlobWriter, StoredBlob};

const TEMP_PREFIX: &str = ".tmp-";

pub(crate) struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens the directory, creating it, and removes temporary files a crash left behind.
    pub(crate) async fn open(root: PathBuf) -> Result<Self, BlobError> {
        tokio::fs::create_dir_all(&root).await.map_err(BlobError::io("create blob directory"))?;
        let removed = remove_stale_temp_files(&root).await?;
        if removed > 0 {
            tracing::info!(removed, dir = %root.display(), "removed stale temporary blob files");
        }
        Ok(Self { root })
    }

    fn path_of(&self, hash: &str) -> Result<PathBuf, BlobError> {
        // Hashes come from our own database, but a path is built from them: refuse anything but hex.
        if hash.len() < 4 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BlobError::NotFound(hash.to_owned()));
        }
        Ok(self.root.join(&hash[..2]).join(&hash[2..4]).join(hash))
    }
}

async fn remove_stale_temp_files(root: &Path) -> Result<usize, BlobError> {
    let mut removed = 0;
    let mut entries = tokio::fs::read_dir(root).await.map_err(BlobError::io("list blob directory"))?;
    while let Some(entry) = entries.next_entry().await.map_err(BlobError::io("list blob directory"))? {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            tokio::fs::remove_file(entry.path()).await.map_err(BlobError::io("remove stale temporary file"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        let root = self.root.clone();
        // tempfile removes the file when `temp` is dropped, which is what makes an aborted upload leave nothing.
        let temp = tokio::task::spawn_blocking(move || tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(&root))
            .await
            .map_err(|e| BlobError::Io { context: "create temporary file", source: std::io::Error::other(e) })?
            .map_err(BlobError::io("create temporary file"))?;
        let file = temp.reopen().map_err(BlobError::io("open temporary file"))?;
        Ok(Box::new(LocalWriter {
            root: self.root.clone(),
            temp,
            file: BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file)),
            hasher: blake3::Hasher::new(),
            written: 0,
        }))
    }

    async fn read(&self, hash: &str, range: Option<Range<u64>>) -> Result<BlobReader, BlobError> {
        let path = self.path_of(hash)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound(hash.to_owned())),
            Err(e) => return Err(BlobError::Io { context: "open blob", source: e }),
        };
        match range {
            None => Ok(Box::pin(file)),
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).await.map_err(BlobError::io("seek blob"))?;
                Ok(Box::pin(file.take(r.end - r.start)))
            }
        }
    }

    async fn delete(&self, hash: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path_of(hash)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io { context: "remove blob", source: e }),
        }
    }

    async fn check(&self) -> Result<(), BlobError> {
        let meta = tokio::fs::metadata(&self.root).await.map_err(BlobError::io("stat blob directory"))?;
        if meta.permissions().readonly() {
            return Err(BlobError::Io {
                context: "blob directory is read-only",
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        Ok(())
    }
}

struct LocalWriter {
    root: PathBuf,
    temp: tempfile::NamedTempFile,
    file: BufWriter<tokio::fs::File>,
    hasher: blake3::Hasher,
    written: u64,
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(BlobError::io("write temporary file"))?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn content_hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    async fn finish(self: Box<Self>) -> Result<StoredBlob, BlobError> {
        let LocalWriter { root, temp, mut file, hasher, written } = *self;
        file.flush().await.map_err(BlobError::io("flush temporary file"))?;
        file.get_ref().sync_all().await.map_err(BlobError::io("fsync temporary file"))?;
        drop(file);
        let hash = hasher.finalize().to_hex().to_string();
        let dir = root.join(&hash[..2]).join(&hash[2..4]);
        let target = dir.join(&hash);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            if target.exists() {
                // Same hash, same bytes: keep the stored copy; dropping `temp` removes ours.
                return Ok(());
            }
            temp.persist(&target).map_err(|e| e.error)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| BlobError::Io { context: "store blob", source: std::io::Error::other(e) })?
        .map_err(BlobError::io("store blob"))?;
        Ok(StoredBlob { hash, size: written })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(store: &LocalStore, hash: &str, range: Option<Range<u64>>) -> Vec<u8> {
        let mut out = Vec::new();
        store.read(hash, range).await.unwrap().read_to_end(&mut out).await.unwrap();
        out
    }

    fn temp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .count()
    }

    #[tokio::test]
    async fn a_finished_blob_is_stored_under_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_owned()).await.unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        let stored = w.finish().await.unwrap();
        assert_eq!(stored.hash, blake3::hash(b"hello world").to_hex().to_string());
        assert_eq!(stored.size, 11);
        assert_eq!(read_all(&store, &stored.hash, None).await, b"hello world");
        assert_eq!(read_all(&store, &stored.hash, Some(6..11)).await, b"world");
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_owned()).await.unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(b"partial").await.unwrap();
        assert_eq!(temp_files(dir.path()), 1);
        drop(w);
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[tokio::test]
    async fn opening_removes_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tmp-crashed"), b"x").unwrap();
        LocalStore::open(dir.path().to_owned()).await.unwrap();
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_hash_that_is_not_hex_is_not_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_owned()).await.unwrap();
        assert!(matches!(store.read("../../etc/passwd", None).await, Err(BlobError::NotFound(_))));
    }
}
