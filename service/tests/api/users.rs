//! Users and API keys.

use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, error_code, spawn_app};

async fn every_api_call_needs_a_valid_key(b: Backend) {
    let app = spawn_app(&b).await;
    let res = app.client.get(app.url("/api/v1/files")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(res).await, "missing-api-key");
    let res = app.get("fwb_not-a-real-key", "/api/v1/files").send().await.unwrap();
    assert_eq!(error_code(res).await, "invalid-api-key");
    let res = app.client.get(app.url("/api/v1/files")).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid-authorization");
}

async fn a_revoked_key_is_refused_at_once(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let me: Value = app.get(&alice.key, "/api/v1/users/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "alice");
    assert_eq!(me["role"], "user");
    let keys: Value =
        app.get(&alice.key, &format!("/api/v1/users/{}/keys", alice.id)).send().await.unwrap().json().await.unwrap();
    let key_id = keys[0]["id"].as_str().unwrap();
    assert!(alice.key.starts_with(keys[0]["prefix"].as_str().unwrap()));
    assert!(keys[0].get("secret").is_none());

    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{}/keys/{key_id}", alice.id)))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app.get(&alice.key, "/api/v1/users/me").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid-api-key");
}

async fn only_admins_manage_users(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let res = app.post(&alice.key, "/api/v1/users").json(&json!({"name": "mallory"})).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "forbidden");
    let res = app.post(&alice.key, &format!("/api/v1/users/{}/keys", alice.id)).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let admin_id = {
        let me: Value = app.get(&app.admin_key, "/api/v1/users/me").send().await.unwrap().json().await.unwrap();
        me["id"].as_str().unwrap().to_owned()
    };
    let res = app.get(&alice.key, &format!("/api/v1/users/{admin_id}/keys")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

async fn user_names_are_unique_and_validated(b: Backend) {
    let app = spawn_app(&b).await;
    app.create_user("alice").await;
    let res = app.post(&app.admin_key, "/api/v1/users").json(&json!({"name": "alice"})).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(error_code(res).await, "user-exists");
    let res = app.post(&app.admin_key, "/api/v1/users").json(&json!({"name": "a b/c"})).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let res =
        app.post(&app.admin_key, "/api/v1/users").json(&json!({"name": "x", "role": "root"})).send().await.unwrap();
    assert_eq!(res.status(), 422);
    error_code(res).await;
}

async fn json_bodies_are_objects_and_whole_numbers_may_carry_a_point(b: Backend) {
    let app = spawn_app(&b).await;
    // serde alone would read an array as the struct's fields in order.
    let res = app.post(&app.admin_key, "/api/v1/users").json(&json!(["bob"])).send().await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(error_code(res).await, "invalid-body");
    // JSON Schema's integer 5.0 is 5; a fraction is not a number of bytes, and the refusal names the field.
    let res = app.post(&app.admin_key, "/api/v1/users").json(&json!({"name": "bob", "quota_bytes": 4096.0}));
    let user: Value = res.send().await.unwrap().json().await.unwrap();
    assert_eq!(user["quota_bytes"], 4096);
    let res = app.post(&app.admin_key, "/api/v1/users").json(&json!({"name": "carol", "quota_bytes": 1.5}));
    let res = res.send().await.unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("quota_bytes"), "{body}");
    // A share link's options are optional: none, or `null`, take the defaults.
    let file = app.upload(&app.admin_key, "s.txt", b"shared".to_vec()).await;
    let share = format!("/api/v1/files/{}/share", file["id"].as_str().unwrap());
    for body in [None, Some("null")] {
        let mut req = app.post(&app.admin_key, &share);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        assert_eq!(req.send().await.unwrap().status(), 201, "{body:?}");
    }
    let res = app.post(&app.admin_key, &share).json(&json!([null, null])).send().await.unwrap();
    assert_eq!(res.status(), 422);
}

on_both_backends!(
    every_api_call_needs_a_valid_key,
    a_revoked_key_is_refused_at_once,
    only_admins_manage_users,
    user_names_are_unique_and_validated,
    json_bodies_are_objects_and_whole_numbers_may_carry_a_point,
);
