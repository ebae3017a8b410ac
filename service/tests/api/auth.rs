//! Authentication on the hot path: no database once warm, revocation and user changes felt at once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{on_both_backends, postgres_redis_or_skip};
use crate::helpers::{Backend, TestApp, error_code, metric, spawn_app, spawn_sibling};

async fn db_lookups(app: &TestApp) -> f64 {
    metric(&app.metrics().await, "auth_db_lookups_total ")
}

async fn me(app: &TestApp, key: &str) -> reqwest::StatusCode {
    app.get(key, "/api/v1/users/me").send().await.unwrap().status()
}

/// Sends requests with `key` until one is answered from the key cache (instances sharing a Redis trust
/// their key cache only once they have read the auth generation); fails after 5 s.
async fn warm(app: &TestApp, key: &str) {
    for _ in 0..100 {
        let before = db_lookups(app).await;
        assert_eq!(me(app, key).await, 200);
        if db_lookups(app).await == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the key cache never answered");
}

async fn authentication_needs_no_database_query_once_warm(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    warm(&app, &alice.key).await;
    let before = db_lookups(&app).await;
    for _ in 0..20 {
        assert_eq!(me(&app, &alice.key).await, 200);
    }
    assert_eq!(db_lookups(&app).await, before, "20 warm requests asked the database for the key");
}

async fn disabling_a_user_stops_their_keys_at_once_and_enabling_restores_them(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    assert_eq!(me(&app, &alice.key).await, 200);
    let patch = |body: Value| {
        app.client.patch(app.url(&format!("/api/v1/users/{}", alice.id))).bearer_auth(&app.admin_key).json(&body).send()
    };
    assert_eq!(patch(json!({"disabled": true})).await.unwrap().status(), 200);
    let res = app.get(&alice.key, "/api/v1/users/me").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid-api-key");
    assert_eq!(patch(json!({"disabled": false})).await.unwrap().status(), 200);
    assert_eq!(me(&app, &alice.key).await, 200);
}

async fn a_role_change_applies_to_the_next_request(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    assert_eq!(app.get(&alice.key, "/api/v1/users").send().await.unwrap().status(), 403);
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{}", alice.id)))
        .bearer_auth(&app.admin_key)
        .json(&json!({"role": "admin", "quota_bytes": 1000}))
        .send()
        .await
        .unwrap();
    let user: Value = res.json().await.unwrap();
    assert_eq!((user["role"].as_str(), user["quota_bytes"].as_i64()), (Some("admin"), Some(1000)));
    assert_eq!(app.get(&alice.key, "/api/v1/users").send().await.unwrap().status(), 200);
}

on_both_backends!(
    authentication_needs_no_database_query_once_warm,
    disabling_a_user_stops_their_keys_at_once_and_enabling_restores_them,
    a_role_change_applies_to_the_next_request,
);

/// The revocation bound: a key revoked on one instance fails on another sharing the Redis within a second,
/// although that instance had the key in its cache.
#[tokio::test]
async fn a_key_revoked_on_one_instance_stops_working_on_another_within_a_second() {
    let test = "auth::a_key_revoked_on_one_instance_stops_working_on_another_within_a_second";
    let Some(backend) = postgres_redis_or_skip(test).await else { return };
    let a = spawn_app(&backend).await;
    let b = spawn_sibling(&a).await;
    let alice = a.create_user("alice").await;
    warm(&b, &alice.key).await;
    let before = db_lookups(&b).await;
    assert_eq!(me(&b, &alice.key).await, 200);
    assert_eq!(db_lookups(&b).await, before, "instance b serves alice from its key cache");

    let keys: Value =
        a.get(&a.admin_key, &format!("/api/v1/users/{}/keys", alice.id)).send().await.unwrap().json().await.unwrap();
    let key_id = keys[0]["id"].as_str().unwrap();
    let res = a
        .client
        .delete(a.url(&format!("/api/v1/users/{}/keys/{key_id}", alice.id)))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(me(&a, &alice.key).await, 401, "refused at once where it was revoked");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(me(&b, &alice.key).await, 401, "refused on the other instance one second later");
}
