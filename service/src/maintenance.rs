//! Upkeep that runs beside the requests: the blob sweep, the audit log's retention, and the checks behind
//! `filewallball admin fsck`.
//!
//! An upload stores its bytes before it writes its row, and a purge removes its row before its bytes, so a
//! crash between the two leaves bytes no row refers to (never a row without bytes). The sweep removes such
//! orphans once they are older than a grace period: an upload between its bytes and its row is younger, and
//! an upload that reuses stored bytes refreshes their time. In the service it also takes the same per-hash lock
//! as uploads and purges, so within one process no race is left at all.

use std::sync::Weak;
use std::time::{Duration, SystemTime};

use chrono::Utc;

use crate::blob::BlobLocks;
use crate::blob::{BlobError, BlobStore};
use crate::db::{AuditStore, DbError, FileStore};
use crate::state::AppContext;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MaintenanceError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// What a sweep found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SweepReport {
    /// Blobs stored, and their bytes.
    pub(crate) blobs: u64,
    pub(crate) bytes: u64,
    /// Blobs older than the grace period that no row refers to, and their bytes (removed when asked to).
    pub(crate) orphans: u64,
    pub(crate) orphan_bytes: u64,
    /// Temporary files of writes idle for longer than the grace period (removed when asked to).
    pub(crate) stale_temp_files: u64,
}

/// Lists every blob, a 1/256 slice at a time, and finds (and with `remove`, deletes) those no row refers to.
pub(crate) async fn sweep(
    db: &dyn FileStore,
    blobs: &dyn BlobStore,
    locks: Option<&BlobLocks>,
    grace: Duration,
    remove: bool,
) -> Result<SweepReport, MaintenanceError> {
    let mut report = SweepReport::default();
    for prefix in (0..=255u8).map(|b| format!("{b:02x}")) {
        let listed = blobs.list(&prefix).await?;
        report.blobs += listed.len() as u64;
        report.bytes += listed.iter().map(|e| e.size).sum::<u64>();
        let old: Vec<_> = listed.into_iter().filter(|e| age(e.modified) >= grace).collect();
        let hashes: Vec<String> = old.iter().map(|e| e.hash.clone()).collect();
        let known: std::collections::HashSet<String> = db.known_blobs(&hashes).await?.into_iter().collect();
        for entry in old.into_iter().filter(|e| !known.contains(&e.hash)) {
            if remove {
                // Asked again under the lock uploads and purges take: a row written since the listing keeps it.
                let _guard = match locks {
                    Some(locks) => Some(locks.lock(&entry.hash).await),
                    None => None,
                };
                if db.blob_ref_count(&entry.hash).await?.is_some() {
                    continue;
                }
                blobs.delete(&entry.hash).await?;
            }
            report.orphans += 1;
            report.orphan_bytes += entry.size;
        }
    }
    report.stale_temp_files = if remove { blobs.remove_stale_temp_files(grace).await? as u64 } else { 0 };
    Ok(report)
}

fn age(time: SystemTime) -> Duration {
    time.elapsed().unwrap_or_default()
}

/// A blob row that disagrees with the store or with the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowProblem {
    /// The row's bytes are not stored: the files that refer to it cannot be read.
    Missing { content_hash: String, files: i64 },
    /// The stored bytes are not the recorded size.
    WrongSize { content_hash: String, recorded: i64, stored: u64 },
    /// The reference count is not the number of files that refer to the blob.
    WrongCount { content_hash: String, recorded: i64, files: i64 },
}

/// Blob rows read per statement while checking them.
const ROWS_PER_PAGE: u32 = 1000;

/// Checks every blob row against the store and the files; with `repair`, sets wrong reference counts right
/// (a count that falls to 0 removes the row, and the sweep then the bytes). Missing bytes cannot be repaired.
pub(crate) async fn check_rows(
    db: &dyn FileStore,
    blobs: &dyn BlobStore,
    repair: bool,
) -> Result<(u64, Vec<RowProblem>), MaintenanceError> {
    let (mut rows, mut problems) = (0u64, Vec::new());
    let mut after: Option<String> = None;
    loop {
        let page = db.blob_page(after.as_deref(), ROWS_PER_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.content_hash.clone());
        for row in page {
            rows += 1;
            match blobs.size_of(&row.content_hash).await? {
                None => problems.push(RowProblem::Missing { content_hash: row.content_hash.clone(), files: row.files }),
                Some(stored) if i64::try_from(stored).ok() != Some(row.size) => problems.push(RowProblem::WrongSize {
                    content_hash: row.content_hash.clone(),
                    recorded: row.size,
                    stored,
                }),
                Some(_) => {}
            }
            if row.ref_count != row.files {
                if repair {
                    db.recount_blob(&row.content_hash).await?;
                }
                problems.push(RowProblem::WrongCount {
                    content_hash: row.content_hash,
                    recorded: row.ref_count,
                    files: row.files,
                });
            }
        }
    }
    Ok((rows, problems))
}

/// Audit rows deleted per statement, so retention never holds a long lock on a busy table.
const PRUNE_BATCH: u32 = 10_000;

/// Deletes audit rows older than `retention`; returns how many went.
pub(crate) async fn prune_audit(db: &dyn AuditStore, retention: Duration) -> Result<u64, DbError> {
    let Some(before) = retention_cutoff(retention) else { return Ok(0) };
    let mut pruned = 0;
    loop {
        let n = db.prune_audit(before, PRUNE_BATCH).await?;
        pruned += n;
        if n < u64::from(PRUNE_BATCH) {
            return Ok(pruned);
        }
    }
}

/// Rows older than this go; `None` when the retention reaches back before the calendar's start (keep all).
fn retention_cutoff(retention: Duration) -> Option<chrono::DateTime<Utc>> {
    chrono::TimeDelta::from_std(retention).ok().and_then(|keep| Utc::now().checked_sub_signed(keep))
}

/// How long after startup the first round runs: long enough for a PostgreSQL store to connect and migrate.
const FIRST_ROUND: Duration = Duration::from_secs(10);

/// Runs the sweep and the audit retention at startup and then on their schedule, for as long as the
/// service runs.
pub(crate) fn spawn(service: Weak<AppContext>) {
    let Some(ctx) = service.upgrade() else { return };
    let every = Duration::from_secs(ctx.config.blob.sweep_interval_secs);
    let grace = Duration::from_secs(ctx.config.blob.sweep_grace_secs);
    let retention = Duration::from_secs(ctx.config.audit.retention_days.saturating_mul(86_400));
    let orphans = ctx.metrics.counter("blob_sweep_orphans_removed_total", Vec::new());
    let orphan_bytes = ctx.metrics.counter("blob_sweep_bytes_removed_total", Vec::new());
    let temps = ctx.metrics.counter("blob_sweep_temp_files_removed_total", Vec::new());
    let pruned = ctx.metrics.counter("audit_rows_pruned_total", Vec::new());
    drop(ctx);
    // Retention is looked at hourly; the sweep when its interval has passed.
    let round = if every.is_zero() { Duration::from_secs(3600) } else { every.min(Duration::from_secs(3600)) };
    let first = if every.is_zero() { FIRST_ROUND } else { FIRST_ROUND.min(every) };
    tokio::spawn(async move {
        tokio::time::sleep(first).await;
        let mut tick = tokio::time::interval(round);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let Some(ctx) = service.upgrade() else { return };
            let (db, blobs) = (ctx.db.as_ref(), ctx.blobs.as_ref());
            if !every.is_zero() && last_sweep.is_none_or(|at| at.elapsed() >= every) {
                match sweep(db, blobs, Some(&ctx.blob_locks), grace, true).await {
                    Ok(report) => {
                        last_sweep = Some(tokio::time::Instant::now());
                        orphans.increment(report.orphans);
                        orphan_bytes.increment(report.orphan_bytes);
                        temps.increment(report.stale_temp_files);
                        if report.orphans > 0 || report.stale_temp_files > 0 {
                            tracing::info!(?report, "blob sweep removed bytes no row refers to");
                        } else {
                            tracing::debug!(?report, "blob sweep found nothing to remove");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "blob sweep failed; trying again next round"),
                }
            }
            if !retention.is_zero() {
                match prune_audit(db, retention).await {
                    Ok(n) => {
                        pruned.increment(n);
                        if n > 0 {
                            tracing::info!(rows = n, "audit rows past their retention deleted");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "audit retention failed; trying again next round"),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_longer_than_the_calendar_keeps_everything_instead_of_overflowing() {
        let day = Duration::from_secs(86_400);
        let cutoff = retention_cutoff(day * 90).unwrap();
        assert!((Utc::now() - cutoff - chrono::TimeDelta::days(90)).num_seconds().abs() <= 1);
        assert_eq!(retention_cutoff(Duration::from_secs(u64::MAX.saturating_mul(86_400))), None);
        assert_eq!(retention_cutoff(day * 200_000_000), None);
    }
}
