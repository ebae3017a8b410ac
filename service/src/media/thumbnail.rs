//! Thumbnails and image metadata, made in the background after an upload.
//!
//! Uploads of PNG, JPEG, WebP and GIF are stored with `thumb_state = 'pending'` and queued here; the upload
//! never waits. A bounded queue feeds at most `thumbnail.workers` jobs at a time; each decodes with limits
//! on dimensions and allocation (a decompression bomb fails, it does not take the memory), records width
//! and height, and writes small/medium/large JPEGs under `<data_dir>/thumbnails`. The database is the queue's
//! memory: pending files are picked up again at startup and by a periodic sweep, so work survives a restart
//! and a full queue.

use std::collections::HashSet;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use image::{DynamicImage, ImageReader, Limits};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::blob::BlobStore;
use crate::cache::Cache;
use crate::config::ThumbnailConfig;
use crate::db::FileStore;
use crate::domain::ThumbState;

/// The sizes served, by name, with their longest side in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ThumbSize {
    Small,
    Medium,
    Large,
}

impl ThumbSize {
    /// Largest first: each is made from the one before, which is cheaper than from the original.
    const ALL: [ThumbSize; 3] = [ThumbSize::Large, ThumbSize::Medium, ThumbSize::Small];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ThumbSize::Small => "small",
            ThumbSize::Medium => "medium",
            ThumbSize::Large => "large",
        }
    }

    fn pixels(self) -> u32 {
        match self {
            ThumbSize::Small => 128,
            ThumbSize::Medium => 512,
            ThumbSize::Large => 1024,
        }
    }
}

/// Whether files of this (sniffed) type get thumbnails.
pub(crate) fn is_thumbnailable(mime: &str) -> bool {
    matches!(mime, "image/png" | "image/jpeg" | "image/webp" | "image/gif")
}

const JPEG_QUALITY: u8 = 80;
/// Pending files looked for per sweep.
const SWEEP_BATCH: u32 = 1000;
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Job {
    id: Uuid,
    hash: String,
}

/// The queue and the workers; owned by the application context.
pub(crate) struct Thumbnailer {
    tx: Option<mpsc::Sender<Job>>,
    /// Files queued or being worked on, so a sweep does not queue them twice.
    in_flight: Mutex<HashSet<Uuid>>,
    dir: PathBuf,
    db: Arc<dyn FileStore>,
}

struct Worker {
    blobs: Arc<dyn BlobStore>,
    cache: Cache,
    limits: Limits,
}

impl Thumbnailer {
    /// Starts the workers (none when `thumbnail.workers` is 0: files then stay pending for another instance)
    /// and the sweep that re-queues pending files.
    pub(crate) async fn start(
        config: &ThumbnailConfig,
        dir: PathBuf,
        db: Arc<dyn FileStore>,
        blobs: Arc<dyn BlobStore>,
        cache: Cache,
    ) -> std::io::Result<Arc<Self>> {
        tokio::fs::create_dir_all(&dir).await?;
        if config.workers == 0 {
            return Ok(Arc::new(Self { tx: None, in_flight: Mutex::default(), dir, db }));
        }
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let this = Arc::new(Self { tx: Some(tx), in_flight: Mutex::default(), dir, db });
        let mut limits = Limits::default();
        limits.max_image_width = Some(config.max_dimension);
        limits.max_image_height = Some(config.max_dimension);
        limits.max_alloc = Some(config.max_decode_bytes);
        let worker = Arc::new(Worker { blobs, cache, limits });
        tokio::spawn(dispatch(Arc::downgrade(&this), worker, rx, config.workers));
        let sweeper = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(this) = sweeper.upgrade() else { return };
                this.queue_pending().await;
            }
        });
        Ok(this)
    }

    /// Queues a file; `false` when the queue is full or work is off (the file stays pending for a sweep).
    pub(crate) fn enqueue(&self, id: Uuid, hash: String) -> bool {
        let Some(tx) = &self.tx else { return false };
        if !self.lock().insert(id) {
            return true;
        }
        if tx.try_send(Job { id, hash }).is_err() {
            self.lock().remove(&id);
            return false;
        }
        true
    }

    /// Queues pending files from the database that are not queued yet; `false` when the database did not answer.
    pub(crate) async fn queue_pending(&self) -> bool {
        if self.tx.is_none() {
            return true;
        }
        match self.db.pending_thumbnails(SWEEP_BATCH).await {
            Ok(pending) => {
                for (id, hash) in pending {
                    if !self.enqueue(id, hash) {
                        break;
                    }
                }
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot look for pending thumbnails yet");
                false
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: Uuid, size: ThumbSize) -> PathBuf {
        self.dir.join(format!("{id}-{}.jpg", size.as_str()))
    }

    pub(crate) async fn read(&self, id: Uuid, size: ThumbSize) -> std::io::Result<Bytes> {
        tokio::fs::read(self.path(id, size)).await.map(Bytes::from)
    }

    /// Removes a file's thumbnails (when it is purged).
    pub(crate) async fn remove(&self, id: Uuid) {
        for size in ThumbSize::ALL {
            match tokio::fs::remove_file(self.path(id, size)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, %id, "cannot remove a thumbnail"),
            }
        }
    }
}

async fn dispatch(
    thumbnailer: std::sync::Weak<Thumbnailer>,
    worker: Arc<Worker>,
    mut rx: mpsc::Receiver<Job>,
    workers: usize,
) {
    // Work left pending by an earlier run is picked up as soon as the database answers
    // (a PostgreSQL store may still be connecting).
    let mut delay = Duration::from_millis(100);
    while let Some(this) = thumbnailer.upgrade() {
        if this.queue_pending().await || delay >= SWEEP_EVERY {
            break;
        }
        drop(this);
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    let permits = Arc::new(Semaphore::new(workers));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (worker, thumbnailer) = (worker.clone(), thumbnailer.clone());
        tokio::spawn(async move {
            let Some(this) = thumbnailer.upgrade() else { return };
            worker.make(&this, &job).await;
            this.lock().remove(&job.id);
            drop(permit);
        });
    }
}

impl Worker {
    async fn make(&self, thumbnailer: &Thumbnailer, job: &Job) {
        let outcome = match self.render(job).await {
            Ok(Some(rendered)) => write_all(thumbnailer, job.id, rendered).await,
            Ok(None) => Ok((ThumbState::Failed, None)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((state, size)) => {
                if let Err(e) = thumbnailer.db.set_thumbnail(job.id, state, size).await {
                    tracing::warn!(error = %e, id = %job.id, "cannot record a thumbnail; it will be made again");
                    return;
                }
                self.cache.file_changed(job.id).await;
            }
            Err(e) => tracing::warn!(error = %e, id = %job.id, "thumbnail not made; it will be tried again"),
        }
    }

    /// Decodes and resizes off the async threads. `Ok(None)`: the image cannot be decoded within the limits.
    async fn render(&self, job: &Job) -> std::io::Result<Option<Rendered>> {
        let mut reader = self.blobs.read(&job.hash, None).await.map_err(std::io::Error::other)?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await?;
        let limits = self.limits.clone();
        let id = job.id;
        tokio::task::spawn_blocking(move || match render(&bytes, limits) {
            Ok(rendered) => Some(rendered),
            Err(e) => {
                tracing::info!(error = %e, %id, "image not decodable: no thumbnails");
                None
            }
        })
        .await
        .map_err(std::io::Error::other)
    }
}

pub(crate) struct Rendered {
    width: u32,
    height: u32,
    pub(crate) jpegs: Vec<(ThumbSize, Vec<u8>)>,
}

pub(crate) fn render(bytes: &[u8], limits: Limits) -> Result<Rendered, image::ImageError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(limits);
    let image = reader.decode()?;
    let (width, height) = (image.width(), image.height());
    let mut current: DynamicImage = image;
    let mut jpegs = Vec::new();
    for size in ThumbSize::ALL {
        let side = size.pixels();
        if current.width() > side || current.height() > side {
            current = current.thumbnail(side, side);
        }
        let rgb = current.to_rgb8();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&rgb)?;
        jpegs.push((size, out));
    }
    Ok(Rendered { width, height, jpegs })
}

async fn write_all(
    thumbnailer: &Thumbnailer,
    id: Uuid,
    rendered: Rendered,
) -> std::io::Result<(ThumbState, Option<(i32, i32)>)> {
    for (size, jpeg) in rendered.jpegs {
        let (dir, target) = (thumbnailer.dir.clone(), thumbnailer.path(id, size));
        // Write then rename: a reader never sees half a thumbnail.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
            std::io::Write::write_all(&mut temp, &jpeg)?;
            temp.persist(target).map_err(|e| e.error)?;
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
    }
    let dims = (i32::try_from(rendered.width).unwrap_or(i32::MAX), i32::try_from(rendered.height).unwrap_or(i32::MAX));
    Ok((ThumbState::Ready, Some(dims)))
}
