//! Several instances sharing PostgreSQL and Redis: what one changes, the others never serve as it was.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::postgres_redis_or_skip;
use crate::helpers::{TestApp, eventually, metric, spawn_app, spawn_sibling, spawn_sibling_with};

async fn file_name(app: &TestApp, path: &str) -> String {
    let meta: Value = app.get(&app.admin_key, path).send().await.unwrap().json().await.unwrap();
    meta["name"].as_str().unwrap().to_owned()
}

/// Instance b reads a file's row on a miss; instance a renames the file and invalidates the cache; only then
/// does b fill the cache with what it read. That fill must store nothing: a per-process guard cannot see a's
/// change, and the old name would be served by every instance until the entry's TTL (an hour).
#[tokio::test]
async fn a_load_that_raced_a_change_on_another_instance_leaves_nothing_stale() {
    let test = "instances::a_load_that_raced_a_change_on_another_instance_leaves_nothing_stale";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let a = spawn_app(&backend).await;
    // b waits between reading the database and filling the cache, so the change lands in between.
    let fill_delay = Duration::from_millis(600);
    let b = spawn_sibling_with(&a, |config| config.cache.fill_delay = fill_delay).await;
    // b knows the admin's key already: the file's row is the only thing its next request loads.
    assert_eq!(b.get(&b.admin_key, "/api/v1/users/me").send().await.unwrap().status(), 200);
    let file = a.upload(&a.admin_key, "old.txt", b"bytes".to_vec()).await;
    let path = format!("/api/v1/files/{}", file["id"].as_str().unwrap());

    let raced = tokio::spawn({
        let request = b.get(&b.admin_key, &path);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(fill_delay / 4).await;
    let rename = a.client.patch(a.url(&path)).bearer_auth(&a.admin_key).json(&json!({"name": "new.txt"}));
    assert_eq!(rename.send().await.unwrap().status(), 200);
    assert_eq!(raced.await.unwrap()["name"], "old.txt", "b's request read the row before the rename");

    // b's fill has run (its request returned after it): neither instance, nor Redis, has the old name.
    assert_eq!(file_name(&b, &path).await, "new.txt", "b serves the name it read before the rename");
    assert_eq!(file_name(&a, &path).await, "new.txt");
}

/// The near cache: b serves a warm file's metadata from its own memory, asking Redis nothing, and a rename on a
/// reaches it through Redis's invalidation push: the next read on b has the new name.
#[tokio::test]
async fn a_change_on_one_instance_reaches_the_near_cache_of_another() {
    let test = "instances::a_change_on_one_instance_reaches_the_near_cache_of_another";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let a = spawn_app(&backend).await;
    let b = spawn_sibling(&a).await;
    for app in [&a, &b] {
        eventually(5, "near cache on", async || metric(&app.metrics().await, "cache_near_live ") == 1.0).await;
    }
    let file = a.upload(&a.admin_key, "old.txt", b"bytes".to_vec()).await;
    let path = format!("/api/v1/files/{}", file["id"].as_str().unwrap());
    // A miss fills Redis, the next read keeps the entry near, and the reads after it are near hits.
    let near_hits = async || metric(&b.metrics().await, "cache_near_hits_total ");
    for _ in 0..3 {
        assert_eq!(file_name(&b, &path).await, "old.txt");
    }
    let before = near_hits().await;
    assert_eq!(file_name(&b, &path).await, "old.txt");
    assert!(near_hits().await > before, "b answered a warm read without asking Redis");

    let rename = a.client.patch(a.url(&path)).bearer_auth(&a.admin_key).json(&json!({"name": "new.txt"}));
    assert_eq!(rename.send().await.unwrap().status(), 200);
    // The push left Redis before a's delete was answered; b reads it on its own connection's task.
    let renamed = std::time::Instant::now();
    eventually(1, "b sees the rename", async || file_name(&b, &path).await == "new.txt").await;
    assert!(renamed.elapsed() < Duration::from_millis(200), "b saw the rename after {:?}", renamed.elapsed());
    // And the instance that made the change reads it at once.
    assert_eq!(file_name(&a, &path).await, "new.txt");
}
