//! Downloads: byte ranges, validators, conditional requests, HEAD, Content-Disposition.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, error_code, pattern, spawn_app};

/// A file small enough for the content cache and one streamed from the blob store.
const SIZES: [usize; 2] = [1000, 300_000];

async fn get_range(app: &TestApp, id: &str, range: &str) -> reqwest::Response {
    app.get(&app.admin_key, &format!("/api/v1/files/{id}/content")).header("range", range).send().await.unwrap()
}

async fn uploaded(app: &TestApp, size: usize) -> (String, Vec<u8>) {
    let bytes = pattern(size, size as u64);
    let meta = app.upload(&app.admin_key, "r.bin", bytes.clone()).await;
    (meta["id"].as_str().unwrap().to_owned(), bytes)
}

async fn single_ranges_return_206_with_the_right_bytes(b: Backend) {
    let app = spawn_app(&b).await;
    for size in SIZES {
        let (id, bytes) = uploaded(&app, size).await;
        let cases = [
            ("bytes=0-0", 0..1),
            ("bytes=0-99", 0..100),
            (&*format!("bytes={}-{}", size - 1, size - 1), size - 1..size),
            ("bytes=-100", size - 100..size),
            ("bytes=500-", 500..size),
            (&*format!("bytes=10-{}", size * 2), 10..size),
            (&*format!("bytes=-{}", size * 2), 0..size),
        ];
        for (range, want) in cases {
            let res = get_range(&app, &id, range).await;
            assert_eq!(res.status(), 206, "{range} of {size}");
            assert_eq!(
                res.headers()["content-range"],
                format!("bytes {}-{}/{size}", want.start, want.end - 1).as_str(),
                "{range}"
            );
            assert_eq!(res.headers()["content-length"], (want.end - want.start).to_string().as_str());
            assert_eq!(res.bytes().await.unwrap(), &bytes[want], "{range} of {size}");
        }
    }
}

async fn several_ranges_return_multipart_byteranges(b: Backend) {
    let app = spawn_app(&b).await;
    for size in SIZES {
        let (id, bytes) = uploaded(&app, size).await;
        let res = get_range(&app, &id, "bytes=0-9, 20-29, -5").await;
        assert_eq!(res.status(), 206);
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let boundary = content_type.strip_prefix("multipart/byteranges; boundary=").expect(&content_type);
        let declared: usize = res.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = res.bytes().await.unwrap();
        assert_eq!(body.len(), declared);
        let parts = parse_byteranges(&body, boundary);
        let expected = [(0, 10), (20, 30), (size - 5, size)];
        assert_eq!(parts.len(), 3);
        for ((range, data), (start, end)) in parts.iter().zip(expected) {
            assert_eq!(range, &format!("bytes {start}-{}/{size}", end - 1));
            assert_eq!(data, &bytes[start..end]);
        }
    }
}

/// Splits a multipart/byteranges body into (Content-Range, bytes) pairs.
fn parse_byteranges(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut parts = Vec::new();
    let mut rest = &text[..];
    loop {
        let at = find(rest, delimiter.as_bytes()).expect("a delimiter");
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            return parts;
        }
        let head_end = find(rest, b"\r\n\r\n").expect("part headers end");
        let head = String::from_utf8(rest[..head_end].to_vec()).unwrap();
        let range =
            head.lines().find_map(|l| l.strip_prefix("Content-Range: ")).expect("a Content-Range per part").to_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, delimiter.as_bytes()).expect("the next delimiter");
        parts.push((range, rest[..end].to_vec()));
        rest = &rest[end..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn unsatisfiable_and_malformed_ranges_are_416_with_the_length(b: Backend) {
    let app = spawn_app(&b).await;
    let (id, _) = uploaded(&app, 1000).await;
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=abc", "bytes=10-5", "bytes=-0", "bytes=1-2,x"] {
        let res = get_range(&app, &id, range).await;
        assert_eq!(res.status(), 416, "{range}");
        assert_eq!(res.headers()["content-range"], "bytes */1000", "{range}");
        assert_eq!(error_code(res).await, "range-not-satisfiable");
    }
}

async fn a_range_in_another_unit_is_ignored(b: Backend) {
    let app = spawn_app(&b).await;
    let (id, bytes) = uploaded(&app, 1000).await;
    let res = get_range(&app, &id, "items=0-5").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), bytes);
}

async fn validators(app: &TestApp, id: &str) -> HeaderMap {
    let res = app.download(&app.admin_key, id).await;
    assert_eq!(res.status(), 200);
    res.headers().clone()
}

async fn conditional(app: &TestApp, id: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.get(&app.admin_key, &format!("/api/v1/files/{id}/content"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn validators_are_a_strong_etag_from_the_hash_and_last_modified(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "v.bin", pattern(2000, 9)).await;
    let h = validators(&app, meta["id"].as_str().unwrap()).await;
    assert_eq!(h["etag"], format!("\"{}\"", meta["content_hash"].as_str().unwrap()).as_str());
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["accept-ranges"], "bytes");
}

async fn conditional_requests_answer_304_and_412(b: Backend) {
    let app = spawn_app(&b).await;
    for size in SIZES {
        let (id, bytes) = uploaded(&app, size).await;
        let h = validators(&app, &id).await;
        let etag = h["etag"].to_str().unwrap();
        let last_modified = h["last-modified"].to_str().unwrap();
        let past = "Mon, 01 Jan 2001 00:00:00 GMT";

        let res = conditional(&app, &id, &[("if-none-match", etag)]).await;
        assert_eq!(res.status(), 304);
        assert_eq!(res.headers()["etag"], etag);
        assert!(res.bytes().await.unwrap().is_empty());
        assert_eq!(conditional(&app, &id, &[("if-none-match", "*")]).await.status(), 304);
        assert_eq!(conditional(&app, &id, &[("if-none-match", &format!("\"other\", {etag}"))]).await.status(), 304);
        assert_eq!(conditional(&app, &id, &[("if-none-match", &format!("W/{etag}"))]).await.status(), 304);
        assert_eq!(conditional(&app, &id, &[("if-none-match", "\"other\"")]).await.status(), 200);
        assert_eq!(conditional(&app, &id, &[("if-modified-since", last_modified)]).await.status(), 304);
        assert_eq!(conditional(&app, &id, &[("if-modified-since", past)]).await.status(), 200);
        // If-None-Match wins over If-Modified-Since.
        let both = [("if-none-match", "\"other\""), ("if-modified-since", last_modified)];
        assert_eq!(conditional(&app, &id, &both).await.status(), 200);

        assert_eq!(conditional(&app, &id, &[("if-match", etag)]).await.status(), 200);
        // If-Match compares strongly: a weak tag never matches.
        assert_eq!(conditional(&app, &id, &[("if-match", &format!("W/{etag}"))]).await.status(), 412);
        let res = conditional(&app, &id, &[("if-match", "\"other\"")]).await;
        assert_eq!(res.status(), 412);
        assert_eq!(error_code(res).await, "precondition-failed");
        assert_eq!(conditional(&app, &id, &[("if-unmodified-since", past)]).await.status(), 412);
        assert_eq!(conditional(&app, &id, &[("if-unmodified-since", last_modified)]).await.status(), 200);

        let res = conditional(&app, &id, &[("range", "bytes=0-9"), ("if-range", etag)]).await;
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap(), &bytes[..10]);
        let res = conditional(&app, &id, &[("range", "bytes=0-9"), ("if-range", "\"stale\"")]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), bytes);
        let res = conditional(&app, &id, &[("range", "bytes=0-9"), ("if-range", last_modified)]).await;
        assert_eq!(res.status(), 206);
    }
}

async fn a_malformed_entity_tag_header_is_a_400(b: Backend) {
    let app = spawn_app(&b).await;
    let (id, _) = uploaded(&app, 100).await;
    let malformed = [
        ("if-none-match", "no-quotes"),
        ("if-match", "\"a\", *"),
        ("if-none-match", "\"open"),
        ("if-match", "\"a\tb\""),
    ];
    for (name, value) in malformed {
        let res = conditional(&app, &id, &[(name, value)]).await;
        assert_eq!(res.status(), 400, "{name}: {value}");
        assert_eq!(error_code(res).await, "invalid-header");
    }
    let res = conditional(&app, &id, &[("range", "bytes=0-1"), ("if-range", "\"a\tb\"")]).await;
    assert_eq!(res.status(), 400, "a tab in an If-Range entity tag");
    // A date that does not parse is ignored, as RFC 9110 says.
    assert_eq!(conditional(&app, &id, &[("if-modified-since", "yesterday")]).await.status(), 200);
}

async fn head_gives_the_headers_without_the_body(b: Backend) {
    let app = spawn_app(&b).await;
    for size in SIZES {
        let (id, _) = uploaded(&app, size).await;
        let res = app
            .client
            .head(app.url(&format!("/api/v1/files/{id}/content")))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], size.to_string().as_str());
        assert!(res.headers().contains_key("etag"));
        assert!(res.bytes().await.unwrap().is_empty());
    }
}

async fn disposition_of(app: &TestApp, raw_name: &str) -> String {
    let meta: Value = app.upload(&app.admin_key, raw_name, b"hello".to_vec()).await;
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    res.headers()["content-disposition"].to_str().unwrap().to_owned()
}

async fn hostile_and_non_ascii_names_are_safe_in_content_disposition(b: Backend) {
    let app = spawn_app(&b).await;
    assert_eq!(
        disposition_of(&app, "../../etc/passwd").await,
        "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"
    );
    assert_eq!(
        disposition_of(&app, "evil\r\nSet-Cookie: a=b.txt").await,
        "attachment; filename=\"evilSet-Cookie: a=b.txt\"; filename*=UTF-8''evilSet-Cookie%3A%20a%3Db.txt"
    );
    assert_eq!(
        disposition_of(&app, "say \"hi\".txt").await,
        "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt"
    );
    assert_eq!(
        disposition_of(&app, "보고서.pdf").await,
        "attachment; filename=\"___.pdf\"; filename*=UTF-8''%EB%B3%B4%EA%B3%A0%EC%84%9C.pdf"
    );
}

async fn a_small_file_is_served_from_the_content_cache_on_the_second_read(b: Backend) {
    let app = spawn_app(&b).await;
    let (id, bytes) = uploaded(&app, 1000).await;
    assert_eq!(app.download(&app.admin_key, &id).await.bytes().await.unwrap(), bytes);
    assert!(app.metrics().await.contains("cache_hits_total{cache_type=\"file_content\"} 0"));
    assert_eq!(app.download(&app.admin_key, &id).await.bytes().await.unwrap(), bytes);
    assert!(app.metrics().await.contains("cache_hits_total{cache_type=\"file_content\"} 1"));
}

on_both_backends!(
    single_ranges_return_206_with_the_right_bytes,
    several_ranges_return_multipart_byteranges,
    unsatisfiable_and_malformed_ranges_are_416_with_the_length,
    a_range_in_another_unit_is_ignored,
    validators_are_a_strong_etag_from_the_hash_and_last_modified,
    conditional_requests_answer_304_and_412,
    a_malformed_entity_tag_header_is_a_400,
    head_gives_the_headers_without_the_body,
    hostile_and_non_ascii_names_are_safe_in_content_disposition,
    a_small_file_is_served_from_the_content_cache_on_the_second_read,
);
