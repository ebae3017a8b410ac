//! Thumbnails: made in the background for PNG, JPEG, WebP and GIF; refused for bombs and broken files;
//! picked up again after a restart.

use std::io::Cursor;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, RgbImage};
use serde_json::Value;

use crate::backends::on_both_backends;
use crate::helpers::{Backend, TestApp, error_code, spawn_app, spawn_app_with};

/// A 1600×900 gradient in `format`, made by the same codecs a user's tools would use.
fn fixture(format: ImageFormat) -> Vec<u8> {
    let image = RgbImage::from_fn(1600, 900, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image).write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

async fn thumbnail(app: &TestApp, id: &str, size: &str) -> reqwest::Response {
    app.get(&app.admin_key, &format!("/api/v1/files/{id}/thumbnail?size={size}")).send().await.unwrap()
}

/// Waits out the 202s; returns the first other answer.
async fn settled(app: &TestApp, id: &str, size: &str) -> reqwest::Response {
    for _ in 0..300 {
        let res = thumbnail(app, id, size).await;
        if res.status() != 202 {
            return res;
        }
        assert_eq!(res.headers()["retry-after"], "2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("thumbnail of {id} still pending after 15 s");
}

async fn images_of_every_format_get_their_size_and_three_thumbnails(b: Backend) {
    let app = spawn_app(&b).await;
    for (format, mime) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::WebP, "image/webp"),
        (ImageFormat::Gif, "image/gif"),
    ] {
        let meta = app.upload(&app.admin_key, "picture", fixture(format)).await;
        assert_eq!(meta["mime_type"], mime);
        assert_eq!(meta["thumbnail"], "pending", "the upload answers before any thumbnail work");
        let id = meta["id"].as_str().unwrap();
        for (size, want) in [("small", (128, 72)), ("medium", (512, 288)), ("large", (1024, 576))] {
            let res = settled(&app, id, size).await;
            assert_eq!(res.status(), 200, "{mime} {size}");
            assert_eq!(res.headers()["content-type"], "image/jpeg");
            let etag = res.headers()["etag"].to_str().unwrap().to_owned();
            let jpeg = res.bytes().await.unwrap();
            let decoded = image::load_from_memory_with_format(&jpeg, ImageFormat::Jpeg).expect("a real JPEG");
            assert_eq!((decoded.width(), decoded.height()), want, "{mime} {size}");
            let again = app
                .get(&app.admin_key, &format!("/api/v1/files/{id}/thumbnail?size={size}"))
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304);
        }
        let meta: Value =
            app.get(&app.admin_key, &format!("/api/v1/files/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!((meta["width"].as_i64(), meta["height"].as_i64()), (Some(1600), Some(900)), "{mime}");
        assert_eq!(meta["thumbnail"], "ready");
    }
}

async fn a_file_that_is_not_an_image_has_no_thumbnail(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "notes.txt", b"just text".to_vec()).await;
    assert!(meta["thumbnail"].is_null());
    let res = thumbnail(&app, meta["id"].as_str().unwrap(), "small").await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "no-thumbnail");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    out
}

/// A well-formed PNG that claims 100 000 × 100 000 pixels (30 GB decoded) in a few dozen bytes.
fn decompression_bomb() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // A zlib stream of a few zero bytes: the rest of the "image" would come from decompressing nothing.
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

async fn a_decompression_bomb_and_a_truncated_image_are_refused_with_422(b: Backend) {
    let app = spawn_app(&b).await;
    let mut truncated = fixture(ImageFormat::Png);
    truncated.truncate(truncated.len() / 2);
    for (name, bytes) in [("bomb.png", decompression_bomb()), ("cut.png", truncated)] {
        let meta = app.upload(&app.admin_key, name, bytes).await;
        assert_eq!(meta["mime_type"], "image/png");
        let res = settled(&app, meta["id"].as_str().unwrap(), "small").await;
        assert_eq!(res.status(), 422, "{name}");
        assert_eq!(error_code(res).await, "undecodable-image");
    }
    // The service is still well.
    assert_eq!(app.client.get(app.url("/health/ready")).send().await.unwrap().status(), 200);
}

async fn pending_thumbnails_are_made_after_a_restart(b: Backend) {
    // No workers: the upload stays pending, as when the process stops before getting to it.
    let app = spawn_app_with(&b, |c| c.thumbnail.workers = 0).await;
    let meta = app.upload(&app.admin_key, "later.png", fixture(ImageFormat::Png)).await;
    let id = meta["id"].as_str().unwrap().to_owned();
    assert_eq!(thumbnail(&app, &id, "small").await.status(), 202);
    let app = app.shut_down().await.restart(|c| c.thumbnail.workers = 2).await;
    assert_eq!(settled(&app, &id, "small").await.status(), 200);
}

on_both_backends!(
    images_of_every_format_get_their_size_and_three_thumbnails,
    a_file_that_is_not_an_image_has_no_thumbnail,
    a_decompression_bomb_and_a_truncated_image_are_refused_with_422,
    pending_thumbnails_are_made_after_a_restart,
);
