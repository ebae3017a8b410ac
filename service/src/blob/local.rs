//! Blobs in a local directory: `<dir>/<hh>/<hh>/<hash>`, written through `<dir>/.tmp-*` files.
//!
//! A write goes to a temporary file in the blob directory itself (same filesystem, so the rename is atomic),
//! is fsync'd, then renamed to its hash; the parent directory is fsync'd so the name survives a crash.
//! The temporary file is removed when the writer is dropped unfinished (error, abort, cancelled request).

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::{BlobEntry, BlobError, BlobReader, BlobStore, BlobWriter, StoredBlob};

const TEMP_PREFIX: &str = ".tmp-";

pub(crate) struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens the directory, creating it. Temporary files are left alone: another process (a service beside
    /// an admin command) may be writing them; the sweep removes those a crash left behind.
    pub(crate) async fn open(root: PathBuf) -> Result<Self, BlobError> {
        tokio::fs::create_dir_all(&root).await.map_err(BlobError::io("create blob directory"))?;
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

/// Whether a directory entry's name is two hex digits (a level of the blob tree).
fn is_hex_pair(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn entry_of(path: &Path) -> std::io::Result<Option<BlobEntry>> {
    let Some(hash) = path.file_name().and_then(|n| n.to_str()) else { return Ok(None) };
    if hash.len() < 4 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let meta = std::fs::metadata(path)?;
    Ok(Some(BlobEntry { hash: hash.to_owned(), size: meta.len(), modified: meta.modified()? }))
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

    async fn list(&self, prefix: &str) -> Result<Vec<BlobEntry>, BlobError> {
        if !is_hex_pair(prefix) {
            return Ok(Vec::new());
        }
        let top = self.root.join(prefix);
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<BlobEntry>> {
            let mut out = Vec::new();
            let seconds = match std::fs::read_dir(&top) {
                Ok(dir) => dir,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            for second in seconds {
                let second = second?;
                if !second.file_type()?.is_dir() || !is_hex_pair(&second.file_name().to_string_lossy()) {
                    continue;
                }
                for blob in std::fs::read_dir(second.path())? {
                    match entry_of(&blob?.path()) {
                        Ok(Some(entry)) => out.push(entry),
                        Ok(None) => {}
                        // Removed between the listing and the look: not there, then.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| BlobError::Io { context: "list blobs", source: std::io::Error::other(e) })?
        .map_err(BlobError::io("list blobs"))
    }

    async fn size_of(&self, hash: &str) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.path_of(hash)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::Io { context: "stat blob", source: e }),
        }
    }

    async fn remove_stale_temp_files(&self, idle: Duration) -> Result<usize, BlobError> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(BlobError::io("list blob directory"))?;
        while let Some(entry) = entries.next_entry().await.map_err(BlobError::io("list blob directory"))? {
            if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            let modified = match entry.metadata().await.and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::Io { context: "stat temporary file", source: e }),
            };
            if modified.elapsed().unwrap_or_default() < idle {
                continue;
            }
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(BlobError::Io { context: "remove stale temporary file", source: e }),
            }
        }
        Ok(removed)
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
            if let Ok(stored) = std::fs::File::options().append(true).open(&target) {
                // Same hash, same bytes: keep the stored copy; dropping `temp` removes ours. Its time is moved
                // to now, so a sweep in any process sees it in use until the upload's row is written.
                stored.set_modified(std::time::SystemTime::now())?;
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
    async fn only_temporary_files_idle_for_long_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = dir.path().join(".tmp-crashed");
        std::fs::write(&crashed, b"x").unwrap();
        let store = LocalStore::open(dir.path().to_owned()).await.unwrap();
        assert_eq!(temp_files(dir.path()), 1, "opening removes nothing: another process may be writing");
        let mut in_flight = store.writer().await.unwrap();
        in_flight.write(b"arriving").await.unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().append(true).open(&crashed).unwrap().set_modified(hour_ago).unwrap();
        assert_eq!(store.remove_stale_temp_files(Duration::from_secs(600)).await.unwrap(), 1);
        assert_eq!(temp_files(dir.path()), 1, "the write in flight keeps its file");
        drop(in_flight);
    }

    #[tokio::test]
    async fn a_listing_by_prefix_finds_each_blob_once_and_reuse_refreshes_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_owned()).await.unwrap();
        let mut hashes = Vec::new();
        for i in 0..40u32 {
            let mut w = store.writer().await.unwrap();
            w.write(&i.to_le_bytes()).await.unwrap();
            hashes.push(w.finish().await.unwrap().hash);
        }
        let mut listed = Vec::new();
        for prefix in (0..=255u8).map(|b| format!("{b:02x}")) {
            listed.extend(store.list(&prefix).await.unwrap().into_iter().map(|e| e.hash));
        }
        listed.sort();
        hashes.sort();
        assert_eq!(listed, hashes);
        assert_eq!(store.size_of(&hashes[0]).await.unwrap(), Some(4));
        store.delete(&hashes[0]).await.unwrap();
        assert_eq!(store.size_of(&hashes[0]).await.unwrap(), None);

        let path = store.path_of(&hashes[1]).unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().append(true).open(&path).unwrap().set_modified(hour_ago).unwrap();
        let mut again = store.writer().await.unwrap();
        again.write(&std::fs::read(&path).unwrap()).await.unwrap();
        again.finish().await.unwrap();
        let entry = store.list(&hashes[1][..2]).await.unwrap().into_iter().find(|e| e.hash == hashes[1]).unwrap();
        assert!(entry.modified.elapsed().unwrap() < Duration::from_secs(600), "reuse did not refresh the time");
    }

    #[tokio::test]
    async fn a_hash_that_is_not_hex_is_not_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_owned()).await.unwrap();
        assert!(matches!(store.read("../../etc/passwd", None).await, Err(BlobError::NotFound(_))));
    }
}
