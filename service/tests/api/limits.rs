//! Rate limits: per key and route class, 429 with Retry-After and RateLimit-* headers, recovery, sharing.

use std::time::Duration;

use crate::backends::{on_both_backends, postgres_redis_or_skip};
use crate::helpers::{Backend, error_code, spawn_app_with, spawn_sibling};

async fn requests_over_the_limit_get_429_with_retry_after_and_recover(b: Backend) {
    // 120 a minute: all 120 at once, then one more every 0.5 s.
    let app = spawn_app_with(&b, |c| c.rate_limit.api_per_minute = 120).await;
    let alice = app.create_user("alice").await;
    let started = std::time::Instant::now();
    let mut allowed = 0u32;
    let refused = loop {
        let res = app.get(&alice.key, "/api/v1/users/me").send().await.unwrap();
        assert_eq!(res.headers()["ratelimit-limit"], "120");
        if res.status() == 429 {
            break res;
        }
        assert_eq!(res.status(), 200);
        allowed += 1;
        assert!(allowed <= 400, "no 429 after {allowed} requests");
    };
    // The whole burst was available, plus what refilled while the loop ran (a slow machine refills more).
    let refilled = (started.elapsed().as_secs_f64() / 0.5).ceil() as u32;
    assert!((120..=120 + refilled + 1).contains(&allowed), "{allowed} allowed, {refilled} refilled");
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    assert_eq!(error_code(refused).await, "rate-limited");
    // Another key is not affected.
    assert_eq!(app.get(&app.admin_key, "/api/v1/users/me").send().await.unwrap().status(), 200);
    // Half a second refills one request.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(app.get(&alice.key, "/api/v1/users/me").send().await.unwrap().status(), 200);
}

async fn each_route_class_has_its_own_limit(b: Backend) {
    let app = spawn_app_with(&b, |c| c.rate_limit.upload_per_minute = 2).await;
    assert_eq!(app.upload_raw(&app.admin_key, "a", b"a".to_vec()).await.status(), 201);
    assert_eq!(app.upload_raw(&app.admin_key, "b", b"b".to_vec()).await.status(), 201);
    let res = app.upload_raw(&app.admin_key, "c", b"c".to_vec()).await;
    assert_eq!(res.status(), 429);
    assert_eq!(app.count_files(&app.admin_key).await, 2, "the refused upload stored nothing");
    assert_eq!(app.get(&app.admin_key, "/api/v1/files").send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/health/ready")).send().await.unwrap().status(), 200);
}

on_both_backends!(requests_over_the_limit_get_429_with_retry_after_and_recover, each_route_class_has_its_own_limit);

#[tokio::test]
async fn instances_sharing_a_redis_share_the_limit() {
    let test = "limits::instances_sharing_a_redis_share_the_limit";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let a = spawn_app_with(&backend, |c| c.rate_limit.api_per_minute = 20).await;
    let b = spawn_sibling(&a).await;
    let alice = a.create_user("alice").await;
    for i in 0..10 {
        assert_eq!(a.get(&alice.key, "/api/v1/users/me").send().await.unwrap().status(), 200, "a {i}");
        assert_eq!(b.get(&alice.key, "/api/v1/users/me").send().await.unwrap().status(), 200, "b {i}");
    }
    assert_eq!(a.get(&alice.key, "/api/v1/users/me").send().await.unwrap().status(), 429);
    assert_eq!(b.get(&alice.key, "/api/v1/users/me").send().await.unwrap().status(), 429);
}
