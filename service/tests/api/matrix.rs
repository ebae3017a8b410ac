//! The authorization matrix: every endpoint against every kind of caller, from one table.

use reqwest::Method;
use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, spawn_app_with};

/// The callers, in the order of the expectation columns.
#[derive(Debug, Clone, Copy)]
enum Actor {
    Owner,
    OtherUser,
    Admin,
    NoKey,
    RevokedKey,
    /// No key, but the file has a live share link (which only `/s/{token}` honours).
    ShareLink,
}

const ACTORS: [Actor; 6] =
    [Actor::Owner, Actor::OtherUser, Actor::Admin, Actor::NoKey, Actor::RevokedKey, Actor::ShareLink];

/// The state a case needs before its request.
#[derive(Debug, Clone, Copy)]
enum Setup {
    /// A fresh private file of the owner's.
    File,
    /// The same, soft-deleted.
    DeletedFile,
}

struct Case {
    method: Method,
    /// `{id}` is the file, `{token}` its share token, `{owner}` the owner's user id.
    path: &'static str,
    setup: Setup,
    body: Option<fn() -> Value>,
    /// Status per actor: owner, other user, admin, no key, revoked key, share link.
    expect: [u16; 6],
}

fn table() -> Vec<Case> {
    use Setup::*;
    let case = |method: Method, path, setup, body, expect| Case { method, path, setup, body, expect };
    vec![
        case(Method::GET, "/api/v1/files/{id}", File, None, [200, 404, 200, 401, 401, 401]),
        case(Method::GET, "/api/v1/files/{id}/content", File, None, [200, 404, 200, 401, 401, 401]),
        case(Method::HEAD, "/api/v1/files/{id}/content", File, None, [200, 404, 200, 401, 401, 401]),
        case(
            Method::PATCH,
            "/api/v1/files/{id}",
            File,
            Some(|| json!({"name": "renamed"})),
            [200, 404, 200, 401, 401, 401],
        ),
        case(Method::DELETE, "/api/v1/files/{id}", File, None, [204, 404, 204, 401, 401, 401]),
        case(Method::POST, "/api/v1/files/{id}/restore", DeletedFile, None, [200, 404, 200, 401, 401, 401]),
        case(Method::POST, "/api/v1/files/{id}/purge", File, None, [403, 403, 204, 401, 401, 401]),
        case(Method::POST, "/api/v1/files/{id}/share", File, Some(|| json!({})), [201, 404, 201, 401, 401, 401]),
        case(Method::GET, "/api/v1/files/{id}/share", File, None, [200, 404, 200, 401, 401, 401]),
        case(Method::GET, "/api/v1/files", File, None, [200, 200, 200, 401, 401, 401]),
        case(Method::GET, "/s/{token}", File, None, [200, 200, 200, 200, 200, 200]),
        case(Method::GET, "/s/{token}", DeletedFile, None, [404, 404, 404, 404, 404, 404]),
        case(Method::GET, "/api/v1/users/me", File, None, [200, 200, 200, 401, 401, 401]),
        case(Method::GET, "/api/v1/users", File, None, [403, 403, 200, 401, 401, 401]),
        case(Method::GET, "/api/v1/users/{owner}/keys", File, None, [200, 404, 200, 401, 401, 401]),
        case(Method::POST, "/api/v1/users/{owner}/keys", File, None, [403, 403, 201, 401, 401, 401]),
        case(Method::GET, "/api/v1/audit", File, None, [403, 403, 200, 401, 401, 401]),
        case(Method::GET, "/api/v1/stats", File, None, [403, 403, 200, 401, 401, 401]),
    ]
}

struct Keys {
    owner: String,
    owner_id: String,
    other: String,
    revoked: String,
}

async fn keys(app: &TestApp) -> Keys {
    let owner = app.create_user("owner").await;
    let other = app.create_user("other").await;
    let gone = app.create_user("gone").await;
    let listed: Value =
        app.get(&app.admin_key, &format!("/api/v1/users/{}/keys", gone.id)).send().await.unwrap().json().await.unwrap();
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{}/keys/{}", gone.id, listed[0]["id"].as_str().unwrap())))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    Keys { owner: owner.key, owner_id: owner.id, other: other.key, revoked: gone.key }
}

async fn every_endpoint_answers_every_caller_as_the_table_says(b: Backend) {
    // Every refused caller here comes from one address: the refusal throttle is not what this table is about.
    let app = spawn_app_with(&b, |c| c.rate_limit.refusals_per_minute = 0).await;
    let k = keys(&app).await;
    let mut failures = Vec::new();
    for case in table() {
        for (actor, expected) in ACTORS.iter().zip(case.expect) {
            let file = app.upload(&k.owner, "m.txt", b"matrix".to_vec()).await;
            let id = file["id"].as_str().unwrap().to_owned();
            let share: Value = app
                .post(&k.owner, &format!("/api/v1/files/{id}/share"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            // Sharing made the file `shared`; the matrix is about a file only its owner may read.
            app.client
                .patch(app.url(&format!("/api/v1/files/{id}")))
                .bearer_auth(&k.owner)
                .json(&json!({"visibility": if case.path.starts_with("/s/") { "shared" } else { "private" }}))
                .send()
                .await
                .unwrap();
            if let Setup::DeletedFile = case.setup {
                app.client.delete(app.url(&format!("/api/v1/files/{id}"))).bearer_auth(&k.owner).send().await.unwrap();
            }
            let path = case
                .path
                .replace("{id}", &id)
                .replace("{token}", share["token"].as_str().unwrap())
                .replace("{owner}", &k.owner_id);
            let mut request = app.client.request(case.method.clone(), app.url(&path));
            request = match actor {
                Actor::Owner => request.bearer_auth(&k.owner),
                Actor::OtherUser => request.bearer_auth(&k.other),
                Actor::Admin => request.bearer_auth(&app.admin_key),
                Actor::RevokedKey => request.bearer_auth(&k.revoked),
                Actor::NoKey | Actor::ShareLink => request,
            };
            if let Some(body) = case.body {
                request = request.json(&body());
            }
            let got = request.send().await.unwrap().status().as_u16();
            if got != expected {
                failures.push(format!("{} {} as {actor:?}: expected {expected}, got {got}", case.method, case.path));
            }
        }
    }
    assert!(failures.is_empty(), "authorization matrix:\n{}", failures.join("\n"));
}

on_both_backends!(every_endpoint_answers_every_caller_as_the_table_says);
