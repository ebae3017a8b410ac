//! Uploads: raw and multipart, streamed, size limits, aborted bodies, denied types, dedup.

use bytes::Bytes;
use futures_util::stream;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::backends::on_both_backends;
use crate::helpers::{Backend, error_code, eventually, pattern, spawn_app, spawn_app_with};

async fn raw_upload_then_download_returns_identical_bytes(b: Backend) {
    let app = spawn_app(&b).await;
    let bytes = pattern(300_000, 1);
    let meta = app.upload(&app.admin_key, "data.bin", bytes.clone()).await;
    assert_eq!(meta["size"], 300_000);
    assert_eq!(meta["name"], "data.bin");
    assert_eq!(meta["content_hash"], blake3::hash(&bytes).to_hex().as_str());
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), bytes);
}

async fn multipart_upload_keeps_bytes_tags_and_visibility(b: Backend) {
    let app = spawn_app(&b).await;
    let bytes = pattern(50_000, 2);
    let form = Form::new()
        .text("tags", "Report, q3,report")
        .text("visibility", "public")
        .part("file", Part::bytes(bytes.clone()).file_name("q3.bin"));
    let res = app.post(&app.admin_key, "/api/v1/files").multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert!(res.headers().get("location").is_some());
    let meta: Value = res.json().await.unwrap();
    assert_eq!(meta["name"], "q3.bin");
    assert_eq!(meta["tags"], serde_json::json!(["q3", "report"]));
    assert_eq!(meta["visibility"], "public");
    let got = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await.bytes().await.unwrap();
    assert_eq!(got, bytes);
}

async fn content_type_comes_from_the_bytes_not_the_client(b: Backend) {
    let app = spawn_app(&b).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    let res = app
        .post(&app.admin_key, "/api/v1/files")
        .query(&[("name", "pic.txt")])
        .header("content-type", "text/plain")
        .body(png)
        .send()
        .await
        .unwrap();
    let meta: Value = res.json().await.unwrap();
    assert_eq!(meta["mime_type"], "image/png");
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}

async fn an_executable_is_refused_with_415_and_leaves_nothing(b: Backend) {
    let app = spawn_app(&b).await;
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(20_000, 7);
    let res = app.upload_raw(&app.admin_key, "tool", elf).await;
    assert_eq!(res.status(), 415);
    assert_eq!(error_code(res).await, "file-type-denied");
    assert_eq!(app.stored_blobs(), 0);
    assert_eq!(app.temp_files(), 0);
    assert_eq!(app.count_files(&app.admin_key).await, 0);
}

async fn a_streamed_200_mib_body_round_trips(b: Backend) {
    const MIB: usize = 1024 * 1024;
    let app = spawn_app_with(&b, |c| c.upload.max_bytes = 256 * MIB as u64).await;
    // 200 chunks of 1 MiB, generated as they are sent: the client never holds the whole body either.
    let chunks = (0..200u64).map(|i| Ok::<_, std::io::Error>(Bytes::from(pattern(MIB, i))));
    let mut expected = blake3::Hasher::new();
    for i in 0..200u64 {
        expected.update(&pattern(MIB, i));
    }
    let res = app
        .post(&app.admin_key, "/api/v1/files")
        .query(&[("name", "big.bin")])
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let meta: Value = res.json().await.unwrap();
    assert_eq!(meta["size"], 200 * MIB);
    assert_eq!(meta["content_hash"], expected.finalize().to_hex().as_str());

    let mut res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], (200 * MIB).to_string().as_str());
    let mut got = blake3::Hasher::new();
    let mut n = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        n += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(n, 200 * MIB);
    assert_eq!(got.finalize().to_hex().as_str(), meta["content_hash"].as_str().unwrap());
}

async fn an_upload_declared_over_the_limit_is_413_and_leaves_nothing(b: Backend) {
    let app = spawn_app_with(&b, |c| c.upload.max_bytes = 1024 * 1024).await;
    let res = app.upload_raw(&app.admin_key, "big.bin", pattern(1024 * 1024 + 1, 3)).await;
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "file-too-large");
    assert_eq!((app.stored_blobs(), app.temp_files()), (0, 0));
    assert_eq!(app.count_files(&app.admin_key).await, 0);
}

async fn a_chunked_upload_over_the_limit_is_413_and_leaves_nothing(b: Backend) {
    let app = spawn_app_with(&b, |c| c.upload.max_bytes = 1024 * 1024).await;
    // No Content-Length: the limit can only be seen while counting bytes.
    let chunks = (0..3u64).map(|i| Ok::<_, std::io::Error>(Bytes::from(pattern(512 * 1024, i))));
    let res = app
        .post(&app.admin_key, "/api/v1/files")
        .query(&[("name", "big.bin")])
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!((app.stored_blobs(), app.temp_files()), (0, 0));
    assert_eq!(app.count_files(&app.admin_key).await, 0);
}

async fn a_multipart_file_over_the_limit_is_413_and_leaves_nothing(b: Backend) {
    let app = spawn_app_with(&b, |c| c.upload.max_bytes = 100_000).await;
    let form = Form::new().part("file", Part::bytes(pattern(150_000, 4)).file_name("x.bin"));
    let res = app.post(&app.admin_key, "/api/v1/files").multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!((app.stored_blobs(), app.temp_files()), (0, 0));
    assert_eq!(app.count_files(&app.admin_key).await, 0);
}

async fn an_aborted_upload_leaves_no_file_and_no_row(b: Backend) {
    let app = spawn_app(&b).await;
    let port = app.address.rsplit(':').next().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
    let head = format!(
        "POST /api/v1/files?name=cut.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 10485760\r\n\r\n",
        app.admin_key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&pattern(2 * 1024 * 1024, 5)).await.unwrap();
    tcp.flush().await.unwrap();
    // The server has started a temporary file for these bytes...
    eventually(10, "a temporary file for the upload", async || app.temp_files() == 1).await;
    // ...and the client goes away mid-body.
    drop(tcp);
    eventually(10, "the temporary file removed", async || app.temp_files() == 0).await;
    assert_eq!(app.stored_blobs(), 0);
    assert_eq!(app.count_files(&app.admin_key).await, 0);
}

async fn identical_uploads_share_one_blob_until_the_last_is_purged(b: Backend) {
    let app = spawn_app(&b).await;
    let bytes = pattern(10_000, 6);
    let a = app.upload(&app.admin_key, "a.bin", bytes.clone()).await;
    let b = app.upload(&app.admin_key, "b.bin", bytes.clone()).await;
    assert_eq!(a["content_hash"], b["content_hash"]);
    assert_eq!(app.stored_blobs(), 1);

    let purge = |id: &str| app.post(&app.admin_key, &format!("/api/v1/files/{id}/purge")).send();
    assert_eq!(purge(a["id"].as_str().unwrap()).await.unwrap().status(), 204);
    assert_eq!(app.stored_blobs(), 1);
    let res = app.download(&app.admin_key, b["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), bytes);
    assert_eq!(app.download(&app.admin_key, a["id"].as_str().unwrap()).await.status(), 404);

    assert_eq!(purge(b["id"].as_str().unwrap()).await.unwrap().status(), 204);
    assert_eq!(app.stored_blobs(), 0);
}

async fn an_empty_file_is_stored_and_served(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "empty", Vec::new()).await;
    assert_eq!(meta["size"], 0);
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap().is_empty());
}

async fn an_upload_without_a_name_is_a_400(b: Backend) {
    let app = spawn_app(&b).await;
    let res = app.post(&app.admin_key, "/api/v1/files").body("x").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid-name");
    let res = app.upload_raw(&app.admin_key, "../..", b"x".to_vec()).await;
    assert_eq!(error_code(res).await, "invalid-name");
    assert_eq!(app.stored_blobs() + app.temp_files(), 0);
}

async fn an_upload_over_the_quota_is_413_before_it_is_stored_and_purging_frees_room(b: Backend) {
    let app = spawn_app(&b).await;
    let alice = app.create_user("alice").await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{}", alice.id)))
        .bearer_auth(&app.admin_key)
        .json(&serde_json::json!({"quota_bytes": 10_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = app.upload(&alice.key, "a.bin", pattern(6000, 1)).await;

    // Declared too big for what is left: refused before the body is read.
    let res = app.upload_raw(&alice.key, "b.bin", pattern(6000, 2)).await;
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "quota-exceeded");
    // Not declared: refused while counting.
    let chunks = (0..3u64).map(|i| Ok::<_, std::io::Error>(Bytes::from(pattern(2000, 10 + i))));
    let res = app
        .post(&alice.key, "/api/v1/files")
        .query(&[("name", "c.bin")])
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!((app.stored_blobs(), app.temp_files()), (1, 0));

    // The trash still counts; purging frees the room.
    let id = first["id"].as_str().unwrap();
    app.client.delete(app.url(&format!("/api/v1/files/{id}"))).bearer_auth(&alice.key).send().await.unwrap();
    assert_eq!(app.upload_raw(&alice.key, "b.bin", pattern(6000, 2)).await.status(), 413);
    app.post(&app.admin_key, &format!("/api/v1/files/{id}/purge")).send().await.unwrap();
    app.upload(&alice.key, "b.bin", pattern(6000, 2)).await;
}

on_both_backends!(
    an_upload_over_the_quota_is_413_before_it_is_stored_and_purging_frees_room,
    raw_upload_then_download_returns_identical_bytes,
    multipart_upload_keeps_bytes_tags_and_visibility,
    content_type_comes_from_the_bytes_not_the_client,
    an_executable_is_refused_with_415_and_leaves_nothing,
    a_streamed_200_mib_body_round_trips,
    an_upload_declared_over_the_limit_is_413_and_leaves_nothing,
    a_chunked_upload_over_the_limit_is_413_and_leaves_nothing,
    a_multipart_file_over_the_limit_is_413_and_leaves_nothing,
    an_aborted_upload_leaves_no_file_and_no_row,
    identical_uploads_share_one_blob_until_the_last_is_purged,
    an_empty_file_is_stored_and_served,
    an_upload_without_a_name_is_a_400,
);
