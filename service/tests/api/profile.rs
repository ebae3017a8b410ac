//! The CPU profile endpoint, against a service kept busy. One test, on one backend: pprof-rs samples the
//! whole process and allows one capture at a time, so parallel profile tests would refuse each other.

use crate::helpers::{Backend, error_code, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_of_a_busy_service_shows_its_own_frames_and_is_for_one_admin_at_a_time() {
    // The load below downloads far faster than the default per-key limit allows.
    let app = spawn_app_with(&Backend::Embedded, |c| c.rate_limit.download_per_minute = 0).await;
    let alice = app.create_user("alice").await;
    let meta = app.upload(&app.admin_key, "hot.bin", vec![7u8; 50_000]).await;
    let path = format!("/api/v1/files/{}/content", meta["id"].as_str().unwrap());

    // Keep the service busy for the whole capture.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (client, url, key) = (app.client.clone(), app.url(&path), app.admin_key.clone());
    let load = tokio::spawn(async move {
        let mut n = 0u64;
        while stopped.try_recv().is_err() {
            let res = client.get(&url).bearer_auth(&key).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap();
            n += 1;
        }
        n
    });

    let profile = |query: &'static str, key: &str| app.get(key, &format!("/debug/pprof/profile?{query}")).send();
    let (first, second) = tokio::join!(profile("seconds=2&frequency=199", &app.admin_key), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        profile("seconds=1", &app.admin_key).await
    });
    let second = second.unwrap();
    assert_eq!(second.status(), 409);
    assert_eq!(error_code(second).await, "profile-in-progress");
    let first = first.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "image/svg+xml");
    let svg = first.text().await.unwrap();
    assert!(svg.contains("<svg"), "an SVG");
    assert!(svg.contains("filewallball::"), "a frame from the service's own code");
    let _ = stop.send(());
    assert!(load.await.unwrap() > 0, "the service kept answering during the capture");

    let res = profile("seconds=1", &alice.key).await.unwrap();
    assert_eq!(res.status(), 403);
    for bad in ["seconds=0", "seconds=121", "frequency=0", "format=xml", "seconds=abc"] {
        let res = app.get(&app.admin_key, &format!("/debug/pprof/profile?{bad}")).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    let pb = profile("seconds=1&format=pb", &app.admin_key).await.unwrap();
    assert_eq!(pb.status(), 200);
    assert_eq!(&pb.bytes().await.unwrap()[..2], &[0x1f, 0x8b], "a gzip'd protobuf");
}
