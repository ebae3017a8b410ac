//! Blobs and rows kept in step: the sweep removes bytes no row refers to, `admin fsck` reports and repairs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use filewallball::startup::admin_fsck;

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, eventually, execute, spawn_app, spawn_app_with};

/// Where a blob's bytes live: `<blobs>/<hh>/<hh>/<hash>`.
fn blob_path(app: &TestApp, hash: &str) -> PathBuf {
    app.blob_dir().join(&hash[..2]).join(&hash[2..4]).join(hash)
}

/// Stores bytes as a crash between an upload's bytes and its row leaves them: no row refers to them.
fn plant_orphan(app: &TestApp, bytes: &[u8]) -> PathBuf {
    let path = blob_path(app, &blake3::hash(bytes).to_hex());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn age(path: &PathBuf, by: Duration) {
    let file = std::fs::File::options().append(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

async fn fsck_reports_then_repairs_beside_a_running_service(b: Backend) {
    let app = spawn_app_with(&b, |c| c.blob.sweep_interval_secs = 0).await;
    let kept = app.upload(&app.admin_key, "kept.txt", b"kept bytes".to_vec()).await;
    let lost = app.upload(&app.admin_key, "lost.txt", b"bytes that will go missing".to_vec()).await;
    let kept_hash = kept["content_hash"].as_str().unwrap().to_owned();
    let orphan = plant_orphan(&app, b"nobody refers to these");
    let young_orphan = plant_orphan(&app, b"an upload between its bytes and its row");
    age(&orphan, Duration::from_secs(7200));
    std::fs::remove_file(blob_path(&app, lost["content_hash"].as_str().unwrap())).unwrap();
    let temp = app.blob_dir().join(".tmp-crashed");
    std::fs::write(&temp, b"half an upload").unwrap();
    age(&temp, Duration::from_secs(7200));
    execute(&app.config, "UPDATE blobs SET ref_count = 5 WHERE content_hash = $1", &kept_hash).await;

    let grace = Duration::from_secs(3600);
    let report = admin_fsck(app.config.clone(), false, grace).await.unwrap();
    let text = report.lines.join("\n");
    assert_eq!(report.unresolved, 3, "{text}");
    assert!(text.contains("blobs no row refers to (older than 3600 s): 1 (22 bytes) found"), "{text}");
    assert!(text.contains("missing bytes: blob"), "{text}");
    assert!(text.contains(&format!("wrong reference count: blob {kept_hash} counts 5, 1 file(s)")), "{text}");
    assert!(orphan.exists() && temp.exists(), "a report removes nothing");

    let report = admin_fsck(app.config.clone(), true, grace).await.unwrap();
    assert_eq!(report.unresolved, 1, "only the missing bytes are left: {}", report.lines.join("\n"));
    assert!(!orphan.exists(), "the old orphan is removed");
    assert!(young_orphan.exists(), "bytes younger than the grace period are left alone");
    assert!(!temp.exists(), "the stale temporary file is removed");
    let report = admin_fsck(app.config.clone(), false, grace).await.unwrap();
    assert_eq!(report.unresolved, 1, "{}", report.lines.join("\n"));

    // The service beside it still serves what it had.
    let res = app.download(&app.admin_key, kept["id"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"kept bytes");
}

async fn the_service_sweeps_orphans_on_its_own(b: Backend) {
    let app = spawn_app_with(&b, |c| {
        c.blob.sweep_interval_secs = 1;
        c.blob.sweep_grace_secs = 60;
    })
    .await;
    let meta = app.upload(&app.admin_key, "a.txt", b"referred to".to_vec()).await;
    let orphan = plant_orphan(&app, b"left by a crash");
    age(&orphan, Duration::from_secs(120));
    eventually(20, "the orphan is swept", async || !orphan.exists()).await;
    // Counted when the sweep has been through every prefix, a moment after the orphan went.
    eventually(20, "the sweep counted it", async || {
        crate::helpers::metric(&app.metrics().await, "blob_sweep_orphans_removed_total ") >= 1.0
    })
    .await;
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"referred to");
}

async fn admin_commands_leave_a_running_services_uploads_alone(b: Backend) {
    let app = spawn_app(&b).await;
    // An upload in flight: its temporary file is young.
    let temp = app.blob_dir().join(".tmp-in-flight");
    std::fs::write(&temp, b"arriving").unwrap();
    filewallball::startup::admin_create_user(app.config.clone(), "carol", "user").await.unwrap();
    assert!(temp.exists(), "create-user removed a temporary file");
    let report = admin_fsck(app.config.clone(), true, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report.unresolved, 0, "{}", report.lines.join("\n"));
    assert!(temp.exists(), "fsck --repair removed an upload in flight");
}

#[tokio::test]
async fn the_first_admin_can_be_made_on_a_data_directory_that_does_not_exist_yet() {
    let parent = tempfile::tempdir().unwrap();
    let mut config = filewallball::Config::default();
    config.storage.data_dir = parent.path().join("not/yet");
    let user = filewallball::startup::admin_create_user(config, "root", "admin").await.unwrap();
    assert!(user.key.starts_with("fwb_"));
}

on_both_backends!(
    fsck_reports_then_repairs_beside_a_running_service,
    the_service_sweeps_orphans_on_its_own,
    admin_commands_leave_a_running_services_uploads_alone,
);
