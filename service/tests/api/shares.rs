//! Share links: signed, expiring, limited, revocable; served without a key.

use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, error_code, pattern, spawn_app};

async fn share(app: &TestApp, key: &str, id: &str, body: Value) -> reqwest::Response {
    app.post(key, &format!("/api/v1/files/{id}/share")).json(&body).send().await.unwrap()
}

async fn fetch(app: &TestApp, url: &str) -> reqwest::Response {
    app.client.get(app.url(url)).send().await.unwrap()
}

async fn a_share_link_serves_the_file_without_a_key_with_ranges(b: Backend) {
    let app = spawn_app(&b).await;
    let bytes = pattern(300_000, 3);
    let meta = app.upload(&app.admin_key, "shared.bin", bytes.clone()).await;
    let id = meta["id"].as_str().unwrap();
    let res = share(&app, &app.admin_key, id, json!({})).await;
    assert_eq!(res.status(), 201);
    let link: Value = res.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with("/s/"));

    let res = fetch(&app, url).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("etag"));
    assert_eq!(res.bytes().await.unwrap(), bytes);
    let res = app.client.get(app.url(url)).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), &bytes[10..20]);
    // Sharing a private file made it `shared`: still not readable by other users with their keys.
    let got: Value =
        app.get(&app.admin_key, &format!("/api/v1/files/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["visibility"], "shared");
    let bob = app.create_user("bob").await;
    assert_eq!(app.download(&bob.key, id).await.status(), 404);
}

async fn a_tampered_expired_used_up_or_revoked_link_is_a_plain_404(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "s.txt", b"shared text".to_vec()).await;
    let id = meta["id"].as_str().unwrap();

    let link: Value = share(&app, &app.admin_key, id, json!({"max_downloads": 1})).await.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    let mut tampered = url.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let res = fetch(&app, &tampered).await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "share-not-found");
    assert_eq!(fetch(&app, "/s/not-a-token").await.status(), 404);
    // HEAD does not use up a download; the one allowed GET does.
    assert_eq!(app.client.head(app.url(&url)).send().await.unwrap().status(), 200);
    assert_eq!(fetch(&app, &url).await.status(), 200);
    let res = fetch(&app, &url).await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "share link not found", "no detail leaked");

    let link: Value = share(&app, &app.admin_key, id, json!({})).await.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&app, &url).await.status(), 200);
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/shares/{}", link["id"].as_str().unwrap())))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(fetch(&app, &url).await.status(), 404);

    // Making the file private again stops every link; so does deleting it.
    let link: Value = share(&app, &app.admin_key, id, json!({})).await.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&app, &url).await.status(), 200);
    app.client
        .patch(app.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(&app.admin_key)
        .json(&json!({"visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fetch(&app, &url).await.status(), 404);

    let res = share(&app, &app.admin_key, id, json!({"expires_in_secs": 0})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid-expiry");
}

async fn an_expired_link_is_a_404(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "e.txt", b"soon gone".to_vec()).await;
    let id = meta["id"].as_str().unwrap();
    let link: Value = share(&app, &app.admin_key, id, json!({"expires_in_secs": 1})).await.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&app, &url).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(fetch(&app, &url).await.status(), 404);
}

async fn only_the_owner_or_an_admin_shares_and_lists_links(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let meta = app.upload(&alice.key, "a.txt", b"alice".to_vec()).await;
    let id = meta["id"].as_str().unwrap();
    assert_eq!(share(&app, &bob.key, id, json!({})).await.status(), 404);
    assert_eq!(share(&app, &alice.key, id, json!({})).await.status(), 201);
    let links: Value =
        app.get(&alice.key, &format!("/api/v1/files/{id}/share")).send().await.unwrap().json().await.unwrap();
    assert_eq!(links.as_array().unwrap().len(), 1);
    assert_eq!(app.get(&bob.key, &format!("/api/v1/files/{id}/share")).send().await.unwrap().status(), 404);
}

async fn patch(app: &TestApp, path: &str, body: Value) -> u16 {
    let res = app.client.patch(app.url(path)).bearer_auth(&app.admin_key).json(&body).send().await.unwrap();
    res.status().as_u16()
}

async fn link_url(app: &TestApp, key: &str, id: &str) -> String {
    let link: Value = share(app, key, id, json!({})).await.json().await.unwrap();
    link["url"].as_str().unwrap().to_owned()
}

async fn a_dead_link_stays_dead_after_a_new_share_a_restore_or_a_reenabled_creator(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "p.txt", b"made private".to_vec()).await;
    let id = meta["id"].as_str().unwrap();

    // Private, then shared again: the new link works, the old one does not come back.
    let old = link_url(&app, &app.admin_key, id).await;
    assert_eq!(patch(&app, &format!("/api/v1/files/{id}"), json!({"visibility": "private"})).await, 200);
    assert_eq!(fetch(&app, &old).await.status(), 404);
    let new = link_url(&app, &app.admin_key, id).await;
    assert_eq!(fetch(&app, &new).await.status(), 200);
    assert_eq!(fetch(&app, &old).await.status(), 404, "the link of before the file went private");

    // Deleted, then restored: its links stay dead.
    let res = app.client.delete(app.url(&format!("/api/v1/files/{id}"))).bearer_auth(&app.admin_key).send().await;
    assert_eq!(res.unwrap().status(), 204);
    assert_eq!(fetch(&app, &new).await.status(), 404);
    let res = app.post(&app.admin_key, &format!("/api/v1/files/{id}/restore")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(fetch(&app, &new).await.status(), 404, "the link of before the file was deleted");
    // A public file's link dies on delete too.
    assert_eq!(patch(&app, &format!("/api/v1/files/{id}"), json!({"visibility": "public"})).await, 200);
    let public = link_url(&app, &app.admin_key, id).await;
    assert_eq!(fetch(&app, &public).await.status(), 200);

    // The creator disabled: their links die, and stay dead when they are enabled again.
    let carol = app.create_user("carol").await;
    let meta = app.upload(&carol.key, "c.txt", b"carol's".to_vec()).await;
    let carols = link_url(&app, &carol.key, meta["id"].as_str().unwrap()).await;
    assert_eq!(fetch(&app, &carols).await.status(), 200);
    assert_eq!(patch(&app, &format!("/api/v1/users/{}", carol.id), json!({"disabled": true})).await, 200);
    assert_eq!(fetch(&app, &carols).await.status(), 404);
    assert_eq!(patch(&app, &format!("/api/v1/users/{}", carol.id), json!({"disabled": false})).await, 200);
    assert_eq!(fetch(&app, &carols).await.status(), 404, "the link of before its creator was disabled");
    // The admin's own link of the public file was not touched by carol's fate.
    assert_eq!(fetch(&app, &public).await.status(), 200);
}

on_both_backends!(
    a_dead_link_stays_dead_after_a_new_share_a_restore_or_a_reenabled_creator,
    a_share_link_serves_the_file_without_a_key_with_ranges,
    a_tampered_expired_used_up_or_revoked_link_is_a_plain_404,
    an_expired_link_is_a_404,
    only_the_owner_or_an_admin_shares_and_lists_links,
);
