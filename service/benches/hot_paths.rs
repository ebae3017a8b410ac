//! Criterion benches of the service's hot paths, each a call into its own code (`filewallball::bench`
//! opens the crate-private pieces). `cargo bench -p filewallball -- --profile-time 10` writes a flamegraph
//! per bench under `target/criterion/<bench>/profile/`.

use std::hint::black_box;
use std::io::Cursor;

use axum::body::Body;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use filewallball::bench::{CacheKeys, Ingest, Meta, ranges, thumbnails};
use filewallball::{Application, Config};
use http::Request;
use tower::ServiceExt as _;

fn cache_keys(c: &mut Criterion) {
    let keys = CacheKeys::new("fwb");
    let id = uuid::Uuid::now_v7().to_string();
    c.bench_function("cache_key/file_meta", |b| b.iter(|| keys.file_meta(black_box(&id))));
}

fn metadata_json(c: &mut Criterion) {
    let meta = Meta::sample();
    let json = meta.encode();
    c.bench_function("metadata_json/encode", |b| b.iter(|| black_box(&meta).encode()));
    c.bench_function("metadata_json/decode", |b| b.iter(|| Meta::decode(black_box(&json))));
}

fn range_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("range_header");
    for (name, header) in [("single", "bytes=0-1023"), ("multi", "bytes=0-9, 20-29, -5"), ("malformed", "bytes=abc")] {
        group.bench_with_input(BenchmarkId::from_parameter(name), header, |b, h| {
            b.iter(|| ranges(black_box(h), 10 * 1024 * 1024))
        });
    }
    group.finish();
}

fn content_hashing(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let ingest = rt.block_on(Ingest::new());
    const MIB: usize = 1024 * 1024;
    // 64 MiB in the 256 KiB pieces the upload path writes.
    let chunks: Vec<Bytes> = (0..256).map(|i| Bytes::from(vec![i as u8; 256 * 1024])).collect();
    let mut group = c.benchmark_group("content_hashing");
    group.throughput(Throughput::Bytes((64 * MIB) as u64)).sample_size(10);
    group.bench_function("blob_writer_64MiB", |b| b.to_async(&rt).iter(|| ingest.write(black_box(&chunks))));
    group.finish();
}

fn metadata_get(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (router, key, id) = rt.block_on(async {
        let mut config = Config::default();
        config.server.bind = "127.0.0.1:0".parse().unwrap();
        config.storage.data_dir = dir.path().to_owned();
        config.rate_limit.api_per_minute = 0;
        let app = Application::build(config).await.expect("the service builds");
        let admin = app.create_user("bench", "admin").await.expect("an admin");
        let router = app.router();
        let upload = Request::post("/api/v1/files?name=b.txt")
            .header("authorization", format!("Bearer {}", admin.key))
            .body(Body::from("bench bytes"))
            .unwrap();
        let res = router.clone().oneshot(upload).await.unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
        (router, admin.key, id)
    });
    let get = || {
        Request::get(format!("/api/v1/files/{id}"))
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    // Warm the key cache and file:meta before timing.
    rt.block_on(async {
        for _ in 0..3 {
            assert_eq!(router.clone().oneshot(get()).await.unwrap().status(), 200);
        }
    });
    c.bench_function("metadata_get/warm_cache_oneshot", |b| {
        b.to_async(&rt).iter(|| async { router.clone().oneshot(get()).await.unwrap().status() })
    });
}

fn thumbnail_4000x3000(c: &mut Criterion) {
    let image = image::RgbImage::from_fn(4000, 3000, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let mut jpeg = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut jpeg, image::ImageFormat::Jpeg).expect("a JPEG");
    let jpeg = jpeg.into_inner();
    let mut group = c.benchmark_group("thumbnail");
    group.sample_size(10);
    group.bench_function("jpeg_4000x3000_three_sizes", |b| b.iter(|| thumbnails(black_box(&jpeg))));
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().with_profiler(fwb_profiling::bench::FlamegraphProfiler::new(199))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = cache_keys, metadata_json, range_headers, content_hashing, metadata_get, thumbnail_4000x3000
}
criterion_main!(hot_paths);
