//! The audit log: events are queued by requests and written in batches by one background task, off the
//! request path. A full queue makes requests wait rather than lose events, and shutdown drains the queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::AuditStore;
use crate::domain::audit::AuditEvent;

/// What the audit log calls an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    FileUpload,
    FileDownload,
    FileUpdate,
    FileDelete,
    FileRestore,
    FilePurge,
    ShareCreate,
    ShareRevoke,
    ShareDownload,
    UserCreate,
    UserUpdate,
    KeyIssue,
    KeyRevoke,
    /// The first use of a key in a while: the closest thing an API has to a login.
    KeyUsed,
    /// A request refused for its credentials or its rights (401, 403).
    Denied,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::FileUpload => "file.upload",
            Action::FileDownload => "file.download",
            Action::FileUpdate => "file.update",
            Action::FileDelete => "file.delete",
            Action::FileRestore => "file.restore",
            Action::FilePurge => "file.purge",
            Action::ShareCreate => "share.create",
            Action::ShareRevoke => "share.revoke",
            Action::ShareDownload => "share.download",
            Action::UserCreate => "user.create",
            Action::UserUpdate => "user.update",
            Action::KeyIssue => "key.issue",
            Action::KeyRevoke => "key.revoke",
            Action::KeyUsed => "auth.key_used",
            Action::Denied => "auth.denied",
        }
    }

    /// Whether the response's body is the bytes the event counts.
    pub(crate) fn is_download(self) -> bool {
        matches!(self, Action::FileDownload | Action::ShareDownload)
    }
}

/// Events written per statement.
const BATCH: usize = 500;
/// How long the writer waits to fill a batch once it has one event.
const LINGER: Duration = Duration::from_millis(100);
/// Events queued before requests start to wait for the writer.
const QUEUE: usize = 10_000;

enum Message {
    Event(AuditEvent),
    /// Answered once every event sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditLog {
    tx: mpsc::Sender<Message>,
}

impl AuditLog {
    /// Starts the writer task.
    pub(crate) fn start(db: Arc<dyn AuditStore>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(db, rx));
        Self { tx }
    }

    pub(crate) async fn record(&self, event: AuditEvent) {
        if self.tx.send(Message::Event(event)).await.is_err() {
            tracing::error!("audit writer is gone; an event was not recorded");
        }
    }

    /// Waits until everything recorded so far is in the database (or `deadline` passes).
    pub(crate) async fn flush(&self, deadline: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(deadline, wait).await, Ok(Ok(())))
    }
}

async fn write_batches(db: Arc<dyn AuditStore>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { break };
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        let mut message = Some(first);
        while let Some(m) = message.take() {
            match m {
                Message::Event(e) => batch.push(e),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() >= BATCH || !waiting.is_empty() {
                break;
            }
            message = tokio::select! {
                m = rx.recv() => m,
                () = &mut linger => None,
            };
        }
        write(db.as_ref(), &mut batch).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    write(db.as_ref(), &mut batch).await;
}

/// Writes the batch, retrying while the database is unavailable; the batch is kept until it is written.
async fn write(db: &dyn AuditStore, batch: &mut Vec<AuditEvent>) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=10 {
        if batch.is_empty() {
            return;
        }
        match db.insert_audit(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, events = batch.len(), "audit write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(events = batch.len(), "audit events kept in memory: the database keeps refusing them");
}

/// Facts a handler knows and the audit middleware does not: the file it created, the bytes it took.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuditFacts {
    pub(crate) file_id: Option<Uuid>,
    pub(crate) bytes: Option<i64>,
}
