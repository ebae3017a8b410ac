//! Every request a load user makes, once, against a real service on the embedded backend: none may fail.

use std::sync::Arc;
use std::time::Duration;

use fwb_loadtest::pacing::UserCtx;
use fwb_loadtest::scenario::{RequestKind, Scenario};
use fwb_loadtest::seed::{self, Api};
use fwb_loadtest::workload::FileService;
use goose::goose::GooseUser;

async fn start_service() -> (String, String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = filewallball::config::Config::default();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.storage.data_dir = data.path().to_owned();
    let app = filewallball::startup::Application::build(config).await.unwrap();
    let admin = app.create_user("admin", "admin").await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (base, admin.key, data)
}

fn scenario() -> Scenario {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/smoke.toml");
    let mut scenario = Scenario::load(std::path::Path::new(path)).unwrap();
    // Two accounts of 25 files each: enough for a second page of a 20-file listing; a few images.
    scenario.seed.accounts = 2;
    scenario.seed.files = 50;
    scenario.seed.image_fraction = 0.1;
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_succeeds_against_a_real_service() {
    let (base, admin_key, _data) = start_service().await;
    let scenario = scenario();
    let api = Api::new(&base, Duration::from_secs(30)).unwrap();
    let data = Arc::new(seed::seed(&api, &admin_key, &scenario.seed).await.unwrap());
    assert_eq!((data.files.len(), data.images.len(), data.uploaded), (50, 5, 50));

    let workload = FileService::new(&scenario, data.clone(), "test".into());
    let config = goose::config::GooseConfiguration::parse_args_default(&["--host", base.as_str()]).unwrap();
    let mut user = GooseUser::single(base.parse().unwrap(), &config).unwrap();
    let mut ctx = UserCtx::new(0);
    // In an order where each request has what it needs: a page seen before the next, an upload before a rename.
    for kind in RequestKind::ALL {
        let performed = workload.perform_kind(kind, &mut user, &mut ctx).await;
        assert_eq!(performed.name, kind.name(), "{kind:?} was replaced by a stand-in");
        assert_eq!(performed.error, None, "{kind:?} failed");
    }

    // A second run against the same deployment finds the accounts and files again.
    let again = seed::seed(&api, &admin_key, &scenario.seed).await.unwrap();
    assert_eq!((again.reused, again.uploaded), (50, 0));
    assert_eq!(
        again.accounts.iter().map(|a| &a.id).collect::<Vec<_>>(),
        data.accounts.iter().map(|a| &a.id).collect::<Vec<_>>()
    );
    seed::release(&api, &admin_key, &again).await.unwrap();
    // Released keys no longer work.
    let status = api
        .client
        .get(format!("{base}/api/v1/files"))
        .bearer_auth(&again.accounts[0].key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_answer_counts_as_an_error() {
    let (base, admin_key, _data) = start_service().await;
    let scenario = scenario();
    let api = Api::new(&base, Duration::from_secs(30)).unwrap();
    let mut data = seed::seed(&api, &admin_key, &scenario.seed).await.unwrap();
    // The load test now expects other bytes than the service holds.
    for file in &mut data.files {
        file.hash = "0".repeat(64);
        file.content = fwb_loadtest::content::Content::stream("something else", file.content.len());
    }
    let workload = FileService::new(&scenario, Arc::new(data), "test".into());
    let config = goose::config::GooseConfiguration::parse_args_default(&["--host", base.as_str()]).unwrap();
    let mut user = GooseUser::single(base.parse().unwrap(), &config).unwrap();
    let mut ctx = UserCtx::new(0);
    for kind in [RequestKind::Download, RequestKind::DownloadRange, RequestKind::GetMetadata] {
        let performed = workload.perform_kind(kind, &mut user, &mut ctx).await;
        assert_eq!(performed.status, Some(if kind == RequestKind::DownloadRange { 206 } else { 200 }));
        assert!(performed.error.is_some(), "{kind:?} took wrong bytes for right ones");
    }
}
