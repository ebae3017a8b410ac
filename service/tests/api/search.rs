//! Search: substring of names in any case, the caller's scope, filters, and its cache.

use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, spawn_app};

async fn names(app: &TestApp, key: &str, query: &str) -> Vec<String> {
    let res = app.get(key, &format!("/api/v1/search?{query}")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{query}");
    let page: Value = res.json().await.unwrap();
    let mut names: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

async fn search_finds_substrings_in_any_case_and_treats_wildcards_literally(b: Backend) {
    let app = spawn_app(&b).await;
    for name in ["Quarterly-Report.PDF", "report_2026.txt", "photo.png", "reportX2026.txt", "보고서 최종.txt"] {
        app.upload(&app.admin_key, name, format!("content of {name}").into_bytes()).await;
    }
    let k = &app.admin_key;
    assert_eq!(names(&app, k, "q=report").await, ["Quarterly-Report.PDF", "reportX2026.txt", "report_2026.txt"]);
    assert_eq!(names(&app, k, "q=REPORT").await, names(&app, k, "q=report").await);
    assert_eq!(names(&app, k, "q=rt_2").await, ["report_2026.txt"], "_ is a character, not a wildcard");
    assert_eq!(names(&app, k, "q=%25").await, Vec::<String>::new(), "% is a character, not a wildcard");
    // Short needles take another path than long ones; both must agree on the answer.
    assert_eq!(names(&app, k, "q=po").await, ["Quarterly-Report.PDF", "reportX2026.txt", "report_2026.txt"]);
    assert_eq!(names(&app, k, "q=%EB%B3%B4%EA%B3%A0%EC%84%9C").await, ["보고서 최종.txt"]);
    assert_eq!(names(&app, k, "q=%EA%B3%A0%EC%84%9C").await, ["보고서 최종.txt"]);
    assert_eq!(names(&app, k, "q=report&mime=image/").await, Vec::<String>::new());
    assert_eq!(names(&app, k, "q=.png").await, ["photo.png"]);
}

async fn search_covers_exactly_what_the_caller_may_read(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.upload(&alice.key, "alice-private.txt", b"a".to_vec()).await;
    let public = app.upload(&alice.key, "alice-public.txt", b"b".to_vec()).await;
    app.client
        .patch(app.url(&format!("/api/v1/files/{}", public["id"].as_str().unwrap())))
        .bearer_auth(&alice.key)
        .json(&json!({"visibility": "public", "tags": ["Shared-Doc"]}))
        .send()
        .await
        .unwrap();
    app.upload(&bob.key, "bob.txt", b"c".to_vec()).await;
    assert_eq!(names(&app, &bob.key, "q=alice").await, ["alice-public.txt"]);
    assert_eq!(names(&app, &bob.key, "q=.txt").await, ["alice-public.txt", "bob.txt"]);
    assert_eq!(names(&app, &alice.key, "q=alice").await, ["alice-private.txt", "alice-public.txt"]);
    assert_eq!(names(&app, &app.admin_key, "q=.txt").await.len(), 3);
    assert_eq!(names(&app, &bob.key, "tag=shared-doc").await, ["alice-public.txt"]);
}

async fn a_repeated_search_is_a_cache_hit_and_a_change_is_seen_at_once(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "draft.txt", b"x".to_vec()).await;
    assert_eq!(names(&app, &app.admin_key, "q=draft").await, ["draft.txt"]);
    assert_eq!(names(&app, &app.admin_key, "q=draft").await, ["draft.txt"]);
    assert!(app.metrics().await.contains("cache_hits_total{cache_type=\"search\"} 1"));
    app.client
        .patch(app.url(&format!("/api/v1/files/{}", meta["id"].as_str().unwrap())))
        .bearer_auth(&app.admin_key)
        .json(&json!({"name": "final.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(names(&app, &app.admin_key, "q=draft").await, Vec::<String>::new());
    assert_eq!(names(&app, &app.admin_key, "q=final").await, ["final.txt"]);
    app.upload(&app.admin_key, "final-2.txt", b"y".to_vec()).await;
    assert_eq!(names(&app, &app.admin_key, "q=final").await, ["final-2.txt", "final.txt"]);
}

async fn search_pages_with_a_cursor(b: Backend) {
    let app = spawn_app(&b).await;
    for i in 0..7 {
        app.upload(&app.admin_key, &format!("doc-{i}.txt"), vec![b'a'; i + 1]).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("/api/v1/search?q=doc&limit=3{cursor}");
        let page: Value = app.get(&app.admin_key, &url).send().await.unwrap().json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[0], "doc-6.txt", "newest first");
    let res = app.get(&app.admin_key, "/api/v1/search?limit=0").send().await.unwrap();
    assert_eq!(res.status(), 400);
}

on_both_backends!(
    search_finds_substrings_in_any_case_and_treats_wildcards_literally,
    search_covers_exactly_what_the_caller_may_read,
    a_repeated_search_is_a_cache_hit_and_a_change_is_seen_at_once,
    search_pages_with_a_cursor,
);
