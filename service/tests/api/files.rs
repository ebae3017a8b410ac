//! Metadata, permissions, changes and listing.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, error_code, pattern, spawn_app};

async fn the_second_metadata_read_is_a_cache_hit(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "m.txt", b"metadata".to_vec()).await;
    let path = format!("/api/v1/files/{}", meta["id"].as_str().unwrap());
    let first: Value = app.get(&app.admin_key, &path).send().await.unwrap().json().await.unwrap();
    let metrics = app.metrics().await;
    assert!(metrics.contains("cache_misses_total{cache_type=\"file_meta\"} 1"), "{metrics}");
    assert!(metrics.contains("cache_hits_total{cache_type=\"file_meta\"} 0"), "{metrics}");
    let second: Value = app.get(&app.admin_key, &path).send().await.unwrap().json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(second, meta);
    let metrics = app.metrics().await;
    assert!(metrics.contains("cache_hits_total{cache_type=\"file_meta\"} 1"), "{metrics}");
    assert!(metrics.contains("cache_misses_total{cache_type=\"file_meta\"} 1"), "{metrics}");
}

async fn a_change_is_seen_at_once_despite_the_cache(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "old.txt", b"x".to_vec()).await;
    let path = format!("/api/v1/files/{}", meta["id"].as_str().unwrap());
    app.get(&app.admin_key, &path).send().await.unwrap(); // now cached
    let res = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&app.admin_key)
        .json(&json!({"name": "new.txt", "tags": ["A", "b"], "visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got: Value = app.get(&app.admin_key, &path).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["name"], "new.txt");
    assert_eq!(got["tags"], json!(["a", "b"]));
    assert_eq!(got["visibility"], "public");
}

async fn another_users_private_file_is_not_found_and_a_public_one_is_read_only(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let private = app.upload(&alice.key, "secret.txt", b"alice's".to_vec()).await;
    let id = private["id"].as_str().unwrap();

    let res = app.get(&bob.key, &format!("/api/v1/files/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "file-not-found");
    assert_eq!(app.download(&bob.key, id).await.status(), 404);
    let res = app.client.delete(app.url(&format!("/api/v1/files/{id}"))).bearer_auth(&bob.key).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // The owner and an admin read it.
    assert_eq!(app.download(&alice.key, id).await.status(), 200);
    assert_eq!(app.download(&app.admin_key, id).await.status(), 200);

    let public = app.upload(&alice.key, "open.txt", b"everyone".to_vec()).await;
    let pid = public["id"].as_str().unwrap();
    app.client
        .patch(app.url(&format!("/api/v1/files/{pid}")))
        .bearer_auth(&alice.key)
        .json(&json!({"visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(app.download(&bob.key, pid).await.status(), 200);
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/files/{pid}")))
        .bearer_auth(&bob.key)
        .json(&json!({"name": "mine.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Bob's listing holds only Bob's files.
    let page: Value = app.get(&bob.key, "/api/v1/files").send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"], json!([]));
}

async fn delete_hides_a_file_and_restore_brings_it_back(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "d.txt", b"bye".to_vec()).await;
    let id = meta["id"].as_str().unwrap();
    let path = format!("/api/v1/files/{id}");
    app.get(&app.admin_key, &path).send().await.unwrap();
    let res = app.client.delete(app.url(&path)).bearer_auth(&app.admin_key).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.get(&app.admin_key, &path).send().await.unwrap().status(), 404);
    assert_eq!(app.download(&app.admin_key, id).await.status(), 404);
    let trash: Value =
        app.get(&app.admin_key, "/api/v1/files?deleted=true").send().await.unwrap().json().await.unwrap();
    assert_eq!(trash["items"][0]["id"], id);

    let res = app.post(&app.admin_key, &format!("{path}/restore")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.download(&app.admin_key, id).await.bytes().await.unwrap(), &b"bye"[..]);
    let res = app.post(&app.admin_key, &format!("{path}/restore")).send().await.unwrap();
    assert_eq!(res.status(), 409);
}

async fn purge_is_for_admins_only(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let meta = app.upload(&alice.key, "p.txt", b"p".to_vec()).await;
    let res =
        app.post(&alice.key, &format!("/api/v1/files/{}/purge", meta["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.stored_blobs(), 1);
}

async fn walk(app: &TestApp, key: &str, query: &[(&str, &str)], mut between_pages: impl AsyncFnMut()) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let res = app.get(key, "/api/v1/files").query(&q).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
        between_pages().await;
    }
}

async fn pagination_walks_every_file_exactly_once_even_with_concurrent_inserts(b: Backend) {
    let app = spawn_app(&b).await;
    let mut ids = HashSet::new();
    for i in 0..23 {
        // Sizes and names repeat, so ties must be broken by id.
        let meta = app.upload(&app.admin_key, &format!("f{}.bin", i % 5), pattern(100 + i % 4, i as u64)).await;
        ids.insert(meta["id"].as_str().unwrap().to_owned());
    }
    for (sort, order) in [("upload_time", "desc"), ("upload_time", "asc"), ("name", "asc"), ("size", "desc")] {
        let mut extra = 0;
        let seen = walk(&app, &app.admin_key, &[("limit", "5"), ("sort", sort), ("order", order)], async || {
            extra += 1;
            app.upload(&app.admin_key, &format!("late{extra}.bin"), pattern(50, 1000 + extra)).await;
        })
        .await;
        let seen_ids: Vec<String> = seen.iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
        let unique: HashSet<&String> = seen_ids.iter().collect();
        assert_eq!(unique.len(), seen_ids.len(), "no file twice ({sort} {order})");
        for id in &ids {
            assert!(unique.contains(id), "{id} missing ({sort} {order})");
        }
        let keys: Vec<Value> = seen
            .iter()
            .map(|f| {
                f[if sort == "upload_time" {
                    "upload_time"
                } else if sort == "name" {
                    "name"
                } else {
                    "size"
                }]
                .clone()
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| {
            let o = match (a, b) {
                (Value::Number(x), Value::Number(y)) => x.as_i64().cmp(&y.as_i64()),
                _ => a.as_str().cmp(&b.as_str()),
            };
            if order == "desc" { o.reverse() } else { o }
        });
        assert_eq!(keys, sorted, "order {sort} {order}");
        // Files uploaded during this walk are part of the set the next walk must cover.
        let all = walk(&app, &app.admin_key, &[("limit", "1000")], async || {}).await;
        ids = all.iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
    }
}

async fn listing_filters_by_type_tag_size_and_date(b: Backend) {
    let app = spawn_app(&b).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    let image = app.upload(&app.admin_key, "i.png", png).await;
    let text = app.upload(&app.admin_key, "t.txt", b"some text here".to_vec()).await;
    app.client
        .patch(app.url(&format!("/api/v1/files/{}", text["id"].as_str().unwrap())))
        .bearer_auth(&app.admin_key)
        .json(&json!({"tags": ["Notes"]}))
        .send()
        .await
        .unwrap();
    let names = |q: &'static [(&'static str, &'static str)]| {
        let app = &app;
        async move {
            let page: Value =
                app.get(&app.admin_key, "/api/v1/files").query(q).send().await.unwrap().json().await.unwrap();
            page["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(names(&[("mime", "image/")]).await, ["i.png"]);
    assert_eq!(names(&[("tag", "notes")]).await, ["t.txt"]);
    assert_eq!(names(&[("min_size", "14"), ("max_size", "14")]).await, ["t.txt"]);
    assert_eq!(names(&[("from", "2001-01-01T00:00:00Z"), ("to", "2002-01-01T00:00:00Z")]).await, Vec::<String>::new());
    assert_eq!(names(&[("sort", "name"), ("order", "asc")]).await, ["i.png", "t.txt"]);
    let _ = image;
}

async fn bad_listing_parameters_are_400s(b: Backend) {
    let app = spawn_app(&b).await;
    for q in ["limit=0", "limit=5000", "cursor=garbage", "sort=colour", "from=yesterday", "min_size=big"] {
        let res = app.get(&app.admin_key, &format!("/api/v1/files?{q}")).send().await.unwrap();
        assert_eq!(res.status(), 400, "{q}");
        error_code(res).await;
    }
}

on_both_backends!(
    the_second_metadata_read_is_a_cache_hit,
    a_change_is_seen_at_once_despite_the_cache,
    another_users_private_file_is_not_found_and_a_public_one_is_read_only,
    delete_hides_a_file_and_restore_brings_it_back,
    purge_is_for_admins_only,
    pagination_walks_every_file_exactly_once_even_with_concurrent_inserts,
    listing_filters_by_type_tag_size_and_date,
    bad_listing_parameters_are_400s,
);
