//! The audit log and the day's statistics.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, pattern, spawn_app, spawn_app_with};

/// The audit log, once it holds at least `n` rows (the writer batches off the request path).
async fn audit_rows(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let page: Value =
            app.get(&app.admin_key, &format!("/api/v1/audit?{query}")).send().await.unwrap().json().await.unwrap();
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} audit rows for {query}");
}

async fn every_action_writes_an_audit_row(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let meta = app.upload(&alice.key, "a.bin", pattern(1234, 1)).await;
    let id = meta["id"].as_str().unwrap();
    assert_eq!(app.download(&alice.key, id).await.status(), 200);
    let path = format!("/api/v1/files/{id}");
    app.client.patch(app.url(&path)).bearer_auth(&alice.key).json(&json!({"name": "b.bin"})).send().await.unwrap();
    app.client.delete(app.url(&path)).bearer_auth(&alice.key).send().await.unwrap();
    app.post(&alice.key, &format!("{path}/restore")).send().await.unwrap();
    let link: Value =
        app.post(&alice.key, &format!("{path}/share")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    assert_eq!(app.client.get(app.url(link["url"].as_str().unwrap())).send().await.unwrap().status(), 200);
    // Denied: another user's private file, a bad key.
    let bob = app.create_user("bob").await;
    assert_eq!(app.post(&bob.key, "/api/v1/users").json(&json!({"name": "x"})).send().await.unwrap().status(), 403);
    assert_eq!(app.get("fwb_bogus", "/api/v1/files").send().await.unwrap().status(), 401);

    let expected = [
        "file.upload",
        "file.download",
        "file.update",
        "file.delete",
        "file.restore",
        "share.create",
        "share.download",
        "user.create",
        "key.issue",
        "auth.key_used",
        "auth.denied",
    ];
    let rows = audit_rows(&app, "limit=1000", 16).await;
    let mut actions: HashSet<&str> = HashSet::new();
    for row in &rows {
        actions.insert(row["action"].as_str().unwrap());
        assert_eq!(row["ip_address"], "127.0.0.1");
    }
    for action in expected {
        assert!(actions.contains(action), "{action} missing from {actions:?}");
    }
    let upload = rows.iter().find(|r| r["action"] == "file.upload").unwrap();
    assert_eq!((upload["user_id"].as_str(), upload["file_id"].as_str()), (Some(alice.id.as_str()), Some(id)));
    assert_eq!((upload["status"].as_u64(), upload["bytes"].as_i64()), (Some(201), Some(1234)));
    let download = rows.iter().find(|r| r["action"] == "file.download").unwrap();
    assert_eq!(download["bytes"], 1234);
    let denied: Vec<&Value> = rows.iter().filter(|r| r["action"] == "auth.denied").collect();
    assert!(denied.iter().any(|r| r["status"] == 401 && r["user_id"].is_null()));
    // A refused change is recorded under its own name, with its status and who tried.
    assert!(rows.iter().any(|r| r["action"] == "user.create" && r["status"] == 403 && r["user_id"] == bob.id.as_str()));

    // Filters and pages.
    let alice_uploads = audit_rows(&app, &format!("user_id={}&action=file.upload", alice.id), 1).await;
    assert_eq!(alice_uploads.len(), 1);
    let first: Value = app.get(&app.admin_key, "/api/v1/audit?limit=5").send().await.unwrap().json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&app.admin_key, &format!("/api/v1/audit?limit=5&cursor={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (a, b) = (first["items"][4]["id"].as_i64().unwrap(), second["items"][0]["id"].as_i64().unwrap());
    assert!(b < a, "pages run newest first without overlap");
    assert_eq!(app.get(&alice.key, "/api/v1/audit").send().await.unwrap().status(), 403);
}

async fn the_client_address_comes_from_forwarded_for_only_through_a_trusted_proxy(b: Backend) {
    let app = spawn_app_with(&b, |c| c.server.trusted_proxies = vec!["127.0.0.1".to_owned()].try_into().unwrap()).await;
    app.post(&app.admin_key, "/api/v1/files?name=x")
        .header("x-forwarded-for", "203.0.113.7")
        .body("x")
        .send()
        .await
        .unwrap();
    let rows = audit_rows(&app, "action=file.upload", 1).await;
    assert_eq!(rows[0]["ip_address"], "203.0.113.7");

    let untrusting = spawn_app(&b).await;
    untrusting
        .post(&untrusting.admin_key, "/api/v1/files?name=x")
        .header("x-forwarded-for", "203.0.113.7")
        .body("x")
        .send()
        .await
        .unwrap();
    let rows = audit_rows(&untrusting, "action=file.upload", 1).await;
    assert_eq!(rows[0]["ip_address"], "127.0.0.1");
}

async fn graceful_shutdown_writes_every_queued_audit_event(b: Backend) {
    let app = spawn_app(&b).await;
    for i in 0..20 {
        app.upload(&app.admin_key, &format!("f{i}"), pattern(10, i)).await;
    }
    // No waiting: the last events are still queued when the service is told to stop.
    let stopped = app.shut_down().await;
    assert_eq!(stopped.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'file.upload'").await, 20);
}

async fn todays_statistics_follow_traffic_and_past_days_are_cached(b: Backend) {
    let app = spawn_app(&b).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    let a = app.upload(&app.admin_key, "a.png", png.clone()).await;
    app.upload(&app.admin_key, "b.txt", b"hello there".to_vec()).await;
    app.download(&app.admin_key, a["id"].as_str().unwrap()).await.bytes().await.unwrap();
    let stats =
        async || -> Value { app.get(&app.admin_key, "/api/v1/stats").send().await.unwrap().json().await.unwrap() };
    let mut today = stats().await;
    for _ in 0..100 {
        if today["downloads"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        today = stats().await;
    }
    assert_eq!(today["uploads"], 2, "{today}");
    assert_eq!(today["downloads"], 1);
    assert_eq!(today["bytes_in"], png.len() + 11);
    assert_eq!(today["bytes_out"], png.len());
    assert_eq!(today["active_users"], 1);
    assert_eq!(today["top_types"].as_array().unwrap().len(), 2);

    app.upload(&app.admin_key, "c.txt", b"more".to_vec()).await;
    // The audit writer lingers before writing; a cached answer for today would stay at 2 for an hour.
    let mut uploads = stats().await["uploads"].clone();
    for _ in 0..100 {
        if uploads == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        uploads = stats().await["uploads"].clone();
    }
    assert_eq!(uploads, 3, "today is never served stale");

    let past = |d: &'static str| app.get(&app.admin_key, &format!("/api/v1/stats?date={d}")).send();
    let old: Value = past("2001-01-01").await.unwrap().json().await.unwrap();
    assert_eq!((old["uploads"].as_i64(), old["date"].as_str()), (Some(0), Some("2001-01-01")));
    past("2001-01-01").await.unwrap();
    assert!(app.metrics().await.contains("cache_hits_total{cache_type=\"stats\"} 1"));
    assert_eq!(past("2001-13-01").await.unwrap().status(), 400);
}

on_both_backends!(
    every_action_writes_an_audit_row,
    the_client_address_comes_from_forwarded_for_only_through_a_trusted_proxy,
    graceful_shutdown_writes_every_queued_audit_event,
    todays_statistics_follow_traffic_and_past_days_are_cached,
);
