//! Hostile input and overload: every body, header, field and connection is bounded, bad input is a 4xx with
//! a clear code, and after each attempt the service still answers and holds no new rows, blobs or temp files.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, error_code, eventually, metric, spawn_app, spawn_app_with};

/// What the service held before an attack: the admin's file rows, stored blobs.
struct Holdings {
    rows: usize,
    blobs: usize,
}

async fn holdings(app: &TestApp) -> Holdings {
    Holdings { rows: app.count_files(&app.admin_key).await, blobs: app.stored_blobs() }
}

/// The service still answers, and kept nothing of what was refused.
async fn unharmed(app: &TestApp, before: &Holdings, what: &str) {
    let live = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200, "{what}: the service stopped answering");
    assert_eq!(app.count_files(&app.admin_key).await, before.rows, "{what}: a row was left");
    assert_eq!(app.stored_blobs(), before.blobs, "{what}: a blob was left");
    eventually(10, &format!("{what}: temporary files removed"), async || app.temp_files() == 0).await;
}

/// A body that sends `chunks` (each once) and then, if `stall`, nothing more without ending.
fn streamed(chunks: Vec<Bytes>, stall: bool) -> reqwest::Body {
    let items = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let tail = futures_util::stream::once(async move {
        if stall {
            std::future::pending::<()>().await;
        }
        Ok(Bytes::new())
    });
    reqwest::Body::wrap_stream(futures_util::StreamExt::chain(items, tail))
}

async fn oversized_json_bodies_are_413_before_they_are_read(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "a.txt", b"a".to_vec()).await;
    let id = meta["id"].as_str().unwrap();
    let before = holdings(&app).await;
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024));
    for chunked in [false, true] {
        let req = app.client.patch(app.url(&format!("/api/v1/files/{id}"))).bearer_auth(&app.admin_key);
        let req = req.header("content-type", "application/json");
        let res = match chunked {
            false => req.body(huge.clone()).send().await.unwrap(),
            true => req.body(streamed(vec![Bytes::from(huge.clone())], false)).send().await.unwrap(),
        };
        assert_eq!(res.status(), 413, "chunked: {chunked}");
        assert_eq!(res.headers()["connection"], "close", "the rest of the body is not read");
        assert_eq!(error_code(res).await, "body-too-large");
    }
    // At the limit a body is read; one byte past it is not.
    let limit = app.config.server.max_json_bytes;
    let sized = |len: usize| format!("{{\"name\":\"{}\"}}", "n".repeat(len - "{\"name\":\"\"}".len()));
    for (len, status) in [(limit, 200), (limit + 1, 413)] {
        let res = app
            .client
            .patch(app.url(&format!("/api/v1/files/{id}")))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .body(sized(len))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "a JSON body of {len} bytes");
    }
    // Deep nesting is a parse error, not a stack overflow or a 500.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "deep JSON: {}", res.status());
    unharmed(&app, &before, "oversized JSON").await;
}

fn multipart_head(boundary: &str) -> String {
    format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n")
}

async fn post_multipart(app: &TestApp, boundary: &str, body: reqwest::Body) -> reqwest::Response {
    app.post(&app.admin_key, "/api/v1/files")
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn multipart_fields_and_part_headers_are_bounded_while_they_stream(b: Backend) {
    let app = spawn_app(&b).await;
    let before = holdings(&app).await;
    let boundary = "XyZzY";
    let mib = || Bytes::from(vec![b'a'; 1024 * 1024]);

    // A text field far over its 4 KiB, sent without a length.
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\n");
    let res = post_multipart(&app, boundary, streamed(vec![head.into(), mib(), mib(), mib()], false)).await;
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "body-too-large");

    // A text field of exactly 4 KiB is read (a name, cut to 255 bytes when stored); one byte more is refused.
    for (len, status) in [(4096, 201), (4097, 413)] {
        let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n").into_bytes();
        body.extend(vec![b'n'; len]);
        body.extend(format!("\r\n{}x\r\n--{boundary}--\r\n", multipart_head(boundary)).into_bytes());
        let res = post_multipart(&app, boundary, reqwest::Body::from(body)).await;
        assert_eq!(res.status(), status, "a text field of {len} bytes");
        if status == 201 {
            let meta: Value = res.json().await.unwrap();
            let purge = app.post(&app.admin_key, &format!("/api/v1/files/{}/purge", meta["id"].as_str().unwrap()));
            assert_eq!(purge.send().await.unwrap().status(), 204);
        }
    }

    // A part header that never ends: megabytes of header line with no blank line after it.
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; x=\"");
    let res = post_multipart(&app, boundary, streamed(vec![head.into(), mib(), mib(), mib()], false)).await;
    assert_eq!(res.status(), 413, "unterminated part header");
    assert_eq!(error_code(res).await, "body-too-large");

    // A preamble that never reaches the first boundary.
    let res = post_multipart(&app, boundary, streamed(vec![mib(), mib(), mib()], false)).await;
    assert_eq!(res.status(), 413, "endless preamble");

    // Broken framing is a 400, not a 500.
    let res = post_multipart(&app, boundary, reqwest::Body::from("--XyZzY\r\nno headers at all")).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid-multipart");

    // The file itself may be large: the framing bound does not count its bytes.
    let mut body = multipart_head(boundary).into_bytes();
    body.extend(vec![7u8; 3 * 1024 * 1024]);
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let res = post_multipart(&app, boundary, streamed(vec![Bytes::from(body)], false)).await;
    assert_eq!(res.status(), 201, "a 3 MiB file in a form");
    let meta: Value = res.json().await.unwrap();
    assert_eq!(meta["size"], 3 * 1024 * 1024);
    let res = app.post(&app.admin_key, &format!("/api/v1/files/{}/purge", meta["id"].as_str().unwrap())).send();
    assert_eq!(res.await.unwrap().status(), 204);
    unharmed(&app, &before, "multipart").await;
}

async fn a_chunked_upload_past_the_limit_is_413_and_leaves_nothing(b: Backend) {
    let app = spawn_app_with(&b, |c| c.upload.max_bytes = 1024 * 1024).await;
    let before = holdings(&app).await;
    let chunks = (0..4).map(|_| Bytes::from(vec![1u8; 512 * 1024])).collect();
    let res = app
        .post(&app.admin_key, "/api/v1/files")
        .query(&[("name", "big.bin")])
        .body(streamed(chunks, false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "file-too-large");
    unharmed(&app, &before, "chunked oversize").await;
}

async fn a_stalled_body_is_dropped_with_its_temp_file(b: Backend) {
    let app = spawn_app_with(&b, |c| c.server.body_idle_timeout_secs = 1).await;
    let before = holdings(&app).await;
    let res = app
        .post(&app.admin_key, "/api/v1/files")
        .query(&[("name", "slow.bin")])
        .body(streamed(vec![Bytes::from(vec![3u8; 200 * 1024])], true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 408);
    assert_eq!(error_code(res).await, "body-timeout");
    unharmed(&app, &before, "stalled upload").await;
}

async fn raw(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn huge_or_numerous_headers_and_long_queries_are_refused(b: Backend) {
    let app = spawn_app(&b).await;
    let before = holdings(&app).await;
    let head_of = |header: usize| {
        format!("GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "a".repeat(header))
    };
    // A head just under the 32 KiB bound is read; one of 100 KiB is not.
    assert!(raw(&app, head_of(31 * 1024).as_bytes()).await.starts_with("HTTP/1.1 200"), "a 31 KiB header");
    let big = head_of(100 * 1024);
    let answer = raw(&app, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "a 100 KiB header: {answer:?}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /health/live HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let answer = raw(&app, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "200 headers: {answer:?}");
    let long = format!("GET /api/v1/search?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "q".repeat(100 * 1024));
    let answer = raw(&app, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "a 100 KiB query string: {}", answer.lines().next().unwrap_or(""));
    unharmed(&app, &before, "headers").await;
}

async fn get_query(app: &TestApp, path_and_query: &str) -> reqwest::Response {
    app.get(&app.admin_key, path_and_query).send().await.unwrap()
}

async fn queries_out_of_range_are_400_on_every_backend(b: Backend) {
    let app = spawn_app(&b).await;
    let before = holdings(&app).await;
    let cursor = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let id = uuid::Uuid::now_v7();
    let far = cursor(json!({"sort": "upload_time", "order": "desc", "value": i64::MAX, "id": id}));
    let nul = cursor(json!({"sort": "name", "order": "asc", "value": "a\u{0}b", "id": id}));
    for (path, code) in [
        (format!("/api/v1/files?cursor={far}"), "invalid-cursor"),
        (format!("/api/v1/files?sort=name&order=asc&cursor={nul}"), "invalid-cursor"),
        (format!("/api/v1/search?q=a&cursor={far}"), "invalid-cursor"),
        ("/api/v1/stats?date=%2B262142-12-31".to_owned(), "bad-request"),
        ("/api/v1/files?from=%2B262142-12-31T00:00:00Z".to_owned(), "bad-request"),
        ("/api/v1/audit?from=0000-01-01T00:00:00Z".to_owned(), "bad-request"),
        ("/api/v1/search?q=a%00b".to_owned(), "invalid-query"),
        ("/api/v1/search?q=ab&mime=text%00".to_owned(), "invalid-query"),
        ("/api/v1/files?tag=a%00".to_owned(), "invalid-query"),
        ("/api/v1/audit?action=x%00".to_owned(), "invalid-query"),
        ("/api/v1/search?q=%FF%FEab".to_owned(), "invalid-query"),
        ("/api/v1/files?min_size=99999999999999999999".to_owned(), "bad-request"),
    ] {
        let res = get_query(&app, &path).await;
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(error_code(res).await, code, "{path}");
    }
    let res = app.upload_raw(&app.admin_key, "\u{202e}", b"x".to_vec()).await;
    assert_eq!(res.status(), 400, "a name of nothing but a bidi override");
    let res = app.post(&app.admin_key, "/api/v1/files?name=%C3%28.txt").body("x").send().await.unwrap();
    assert_eq!(res.status(), 400, "a name that is not UTF-8");
    unharmed(&app, &before, "queries").await;
}

async fn a_bidi_override_never_reaches_the_download_name(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "a\u{202e}fdp.exe", b"MZ?".to_vec()).await;
    assert_eq!(meta["name"], "afdp.exe");
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    let disposition = res.headers()["content-disposition"].to_str().unwrap();
    assert!(!disposition.contains("%E2%80%AE"), "{disposition}");
}

async fn ranges_never_add_up_to_more_than_the_file(b: Backend) {
    let app = spawn_app(&b).await;
    let bytes = crate::helpers::pattern(300_000, 5);
    let meta = app.upload(&app.admin_key, "r.bin", bytes.clone()).await;
    let id = meta["id"].as_str().unwrap();
    let many: Vec<String> = (0..20).map(|i| format!("{}-{}", i * 10, i * 10 + 5)).collect();
    for range in ["bytes=0-,0-", "bytes=0-10,5-20,8-30", &format!("bytes={}", many.join(","))] {
        let res = app.get(&app.admin_key, &format!("/api/v1/files/{id}/content")).header("range", range).send();
        let res = res.await.unwrap();
        assert_eq!(res.status(), 200, "{range}");
        assert_eq!(res.bytes().await.unwrap(), bytes, "{range}");
    }
    // A date in the future is no date: the file is sent.
    let res = app
        .get(&app.admin_key, &format!("/api/v1/files/{id}/content"))
        .header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn a_flood_of_bad_keys_costs_few_lookups_and_few_audit_rows(b: Backend) {
    let app = spawn_app_with(&b, |c| c.rate_limit.refusals_per_minute = 10).await;
    // The admin's key is used before the flood, so this instance knows it.
    assert_eq!(get_query(&app, "/api/v1/users/me").await.status(), 200);
    let lookups = async || metric(&app.metrics().await, "auth_db_lookups_total ");
    let before = lookups().await;
    let unknown = format!("fwb_{}", "B".repeat(43));
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for i in 0..60 {
        let key = if i % 2 == 0 { "junk" } else { unknown.as_str() };
        let res = app.get(key, "/api/v1/files").send().await.unwrap();
        *statuses.entry(res.status().as_u16()).or_default() += 1;
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            assert_eq!(error_code(res).await, "too-many-refusals");
        }
    }
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&50), "{statuses:?}");
    assert_eq!(lookups().await - before, 1.0, "one lookup for the unknown key, none for junk or repeats");
    // A key the instance knows is not throttled, even from the flooding address.
    assert_eq!(get_query(&app, "/api/v1/users/me").await.status(), 200);
    // Shutting down writes every queued audit event.
    let stopped = app.shut_down().await;
    let rows = stopped.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'auth.denied'").await;
    assert_eq!(rows, 10, "one row per refusal before the throttle, none after");
}

async fn past_max_in_flight_requests_get_a_fast_503_and_health_still_answers(b: Backend) {
    let app = spawn_app_with(&b, |c| c.server.max_in_flight = 1).await;
    let before = holdings(&app).await;
    // One upload holds the only slot while its body trickles in.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream(rx));
    let held = tokio::spawn(app.post(&app.admin_key, "/api/v1/files").query(&[("name", "held.bin")]).body(body).send());
    tx.send(Ok(Bytes::from_static(b"first bytes"))).await.unwrap();
    // Admitted once its handler has opened the upload's temporary file.
    eventually(10, "the upload is under way", async || app.temp_files() == 1).await;
    let shed = async || metric(&app.metrics().await, "http_requests_shed_total ");
    let res = get_query(&app, "/api/v1/users/me").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(error_code(res).await, "overloaded");
    // A shed request with a body is told the connection ends: its body was never read.
    let res = app.upload_raw(&app.admin_key, "shed.bin", vec![1u8; 10_000]).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["connection"], "close");
    assert!(shed().await >= 2.0);
    assert_eq!(app.client.get(app.url("/health/ready")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/metrics")).send().await.unwrap().status(), 200);
    // The held request finishes normally, and the slot is free again.
    drop(tx);
    let res = held.await.unwrap().unwrap();
    assert_eq!(res.status(), 201);
    let meta: Value = res.json().await.unwrap();
    assert_eq!(get_query(&app, "/api/v1/users/me").await.status(), 200);
    let res = app.post(&app.admin_key, &format!("/api/v1/files/{}/purge", meta["id"].as_str().unwrap())).send();
    assert_eq!(res.await.unwrap().status(), 204);
    unharmed(&app, &before, "overload").await;
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Reads until the server closes the connection; `false` if it is still open after `secs`.
async fn closed_within(stream: &mut TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn half_sent_heads_and_idle_connections_are_closed(b: Backend) {
    let app = spawn_app_with(&b, |c| c.server.header_read_timeout_secs = 1).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(closed_within(&mut half, 15).await, "a half-sent head kept its connection");

    // A kept-alive connection that goes quiet after a request is closed too.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut idle, 15).await, "an idle keep-alive connection stayed open");
    let open = metric(&app.metrics().await, "http_connections_open ");
    assert!(open <= 1.0, "{open} connections still counted open");
}

async fn connections_past_the_cap_are_refused_at_once(b: Backend) {
    let app = spawn_app_with(&b, |c| c.server.max_connections = 3).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too-many-connections"), "{answer}");
    drop(held);
    eventually(10, "a connection is accepted again", async || {
        app.client.get(app.url("/health/live")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(metric(&app.metrics().await, "http_connections_refused_total ") >= 1.0);
}

on_both_backends!(
    oversized_json_bodies_are_413_before_they_are_read,
    multipart_fields_and_part_headers_are_bounded_while_they_stream,
    a_chunked_upload_past_the_limit_is_413_and_leaves_nothing,
    a_stalled_body_is_dropped_with_its_temp_file,
    huge_or_numerous_headers_and_long_queries_are_refused,
    queries_out_of_range_are_400_on_every_backend,
    a_bidi_override_never_reaches_the_download_name,
    ranges_never_add_up_to_more_than_the_file,
    a_flood_of_bad_keys_costs_few_lookups_and_few_audit_rows,
    past_max_in_flight_requests_get_a_fast_503_and_health_still_answers,
    half_sent_heads_and_idle_connections_are_closed,
    connections_past_the_cap_are_refused_at_once,
);
