//! Instruction counts of the hot request paths, each [`REQUESTS`] consecutive requests through the real router on
//! the embedded backend (SQLite, in-process cache, local directory), counted by valgrind's callgrind through
//! gungraun. The counts are for all of them together.
//!
//! A count does not depend on the machine's load, so it can gate changes far smaller than a latency threshold
//! sees: `cargo xtask perf --instructions` runs these and compares them with `reports/baselines/instructions.json`.
//!
//! Each bench runs in its own process: the setup (building the service, uploading the files, warming the caches
//! with the same request) is not counted. What is counted is every poll of the request's future — the router,
//! its layers, the handler, the cache, and reading the whole body — and nothing else: callgrind collects only
//! inside [`counted_poll`]. The runtime's scheduling, the other tasks it polls meanwhile (the audit writer, the
//! key poller), the waits, the SQLite connection's worker thread and the blocking pool (file reads and writes)
//! depend on timing, not on the code under test, and are left out: counted with them, the same build's counts
//! moved by up to 10 % from run to run. What is left to vary (up to ~2 % a round) comes with the process, not the
//! timing: each bench is a new process with new hash seeds and a new allocator state, so the cache's lookups and
//! `malloc` take slightly different paths through the same requests.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use filewallball::{Application, Config};
use gungraun::{Callgrind, EntryPoint, LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main};
use http::{Request, Response};
use tower::ServiceExt as _;

/// Requests counted per bench.
const REQUESTS: usize = 8;

/// The service, the requests to send, and what must stay alive until the count is over.
struct Fixture {
    /// The status the counted request must answer: a count of a wrong answer never passes for a fast one.
    expected: u16,
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// The admin's key, which the seeded files belong to.
    key: String,
    requests: Vec<Request<Body>>,
    _app: Application,
    _dir: tempfile::TempDir,
}

/// What a file in the fixture holds.
fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A key with the right shape that no user holds.
const UNKNOWN_KEY: &str = "fwb_0000000000000000000000000000000000000000000";

/// The files every fixture has: `small.bin` (1 KiB), `medium.bin` (64 KiB) and twenty `list-NN.txt`.
struct Files {
    small: String,
    medium: String,
    /// `small.bin`'s ETag, as a download answers it.
    small_etag: String,
}

impl Fixture {
    /// Builds the service and seeds it; `request(key, files, n)` makes the n-th request from the admin key and
    /// the seeded files.
    fn new(expected: u16, request: impl Fn(&str, &Files, usize) -> Request<Body>) -> Fixture {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let dir = tempfile::tempdir().expect("a temp dir");
        let (app, router, key, files) = runtime.block_on(async {
            let mut config = Config::default();
            config.server.bind = "127.0.0.1:0".parse().unwrap();
            config.storage.data_dir = dir.path().to_owned();
            config.rate_limit.api_per_minute = 0;
            config.rate_limit.download_per_minute = 0;
            config.rate_limit.upload_per_minute = 0;
            config.thumbnail.workers = 0;
            let app = Application::build(config).await.expect("the service builds");
            let admin = app.create_user("bench", "admin").await.expect("an admin");
            let router = app.router();
            let small = upload(&router, &admin.key, "small.bin", bytes(1024)).await;
            let medium = upload(&router, &admin.key, "medium.bin", bytes(64 * 1024)).await;
            for n in 0..20 {
                upload(&router, &admin.key, &format!("list-{n:02}.txt"), format!("listed file {n}").into()).await;
            }
            let content = get(&format!("/api/v1/files/{small}/content"), &admin.key).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(content).await.unwrap();
            let small_etag = response.headers()["etag"].to_str().unwrap().to_owned();
            (app, router, admin.key, Files { small, medium, small_etag })
        });
        let mut fixture = Fixture { expected, runtime, router, key, requests: Vec::new(), _app: app, _dir: dir };
        // Three requests of the same shape first: caches, key lookups and lazy statics are warm when counting starts.
        for n in 0..3 {
            let status = fixture.send(request(&fixture.key, &files, n)).status();
            assert_eq!(status, expected, "warming answered {status}");
        }
        fixture.requests = (3..3 + REQUESTS).map(|n| request(&fixture.key, &files, n)).collect();
        fixture
    }

    fn send(&mut self, request: Request<Body>) -> Response<bytes::Bytes> {
        let router = self.router.clone();
        self.runtime.block_on(async move {
            let response = router.oneshot(request).await.expect("the router answers");
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, axum::body::to_bytes(body, usize::MAX).await.expect("a body"))
        })
    }

    /// The counted part: each request through the router and its whole body, one after the other.
    fn run(mut self) -> (Fixture, usize) {
        let requests = std::mem::take(&mut self.requests);
        let router = self.router.clone();
        let exchange: Exchange = Box::pin(async move {
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests {
                let response = router.clone().oneshot(request).await.expect("the router answers");
                let (parts, body) = response.into_parts();
                answers.push((parts.status, axum::body::to_bytes(body, usize::MAX).await.expect("a body").len()));
            }
            answers
        });
        let answers = self.runtime.block_on(Counted(exchange));
        assert_eq!(answers.len(), REQUESTS);
        for (status, _) in &answers {
            assert_eq!(*status, self.expected, "a counted request answered {status}");
        }
        let bytes = answers.iter().map(|(_, len)| len).sum();
        (self, bytes)
    }
}

/// The statuses and body lengths of the counted requests.
type Answers = Vec<(http::StatusCode, usize)>;
type Exchange = Pin<Box<dyn Future<Output = Answers>>>;

/// A request's future whose every poll goes through [`counted_poll`].
struct Counted(Exchange);

impl Future for Counted {
    type Output = Answers;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        counted_poll(self.get_mut().0.as_mut(), cx)
    }
}

/// Callgrind's entry point (see `main!` below): instructions are collected only while inside this function.
#[inline(never)]
fn counted_poll(exchange: Pin<&mut dyn Future<Output = Answers>>, cx: &mut Context<'_>) -> Poll<Answers> {
    exchange.poll(cx)
}

fn upload_request(key: &str, name: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(format!("/api/v1/files?name={name}"))
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body))
        .unwrap()
}

async fn upload(router: &Router, key: &str, name: &str, body: Vec<u8>) -> String {
    let response = router.clone().oneshot(upload_request(key, name, body)).await.unwrap();
    assert_eq!(response.status(), 201, "uploading {name}");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned()
}

fn get(path: &str, key: &str) -> http::request::Builder {
    Request::get(path).header("authorization", format!("Bearer {key}"))
}

fn metadata_get(expected: u16) -> Fixture {
    Fixture::new(expected, |key, f, _| get(&format!("/api/v1/files/{}", f.small), key).body(Body::empty()).unwrap())
}

fn download_small(expected: u16) -> Fixture {
    Fixture::new(expected, |key, f, _| {
        get(&format!("/api/v1/files/{}/content", f.small), key).body(Body::empty()).unwrap()
    })
}

fn download_range(expected: u16) -> Fixture {
    Fixture::new(expected, |key, f, _| {
        get(&format!("/api/v1/files/{}/content", f.medium), key)
            .header("range", "bytes=1024-5119")
            .body(Body::empty())
            .unwrap()
    })
}

fn revalidate(expected: u16) -> Fixture {
    Fixture::new(expected, |key, f, _| {
        get(&format!("/api/v1/files/{}/content", f.small), key)
            .header("if-none-match", &f.small_etag)
            .body(Body::empty())
            .unwrap()
    })
}

fn list_page(expected: u16) -> Fixture {
    Fixture::new(expected, |key, _, _| get("/api/v1/files?limit=20", key).body(Body::empty()).unwrap())
}

fn search_cached(expected: u16) -> Fixture {
    Fixture::new(expected, |key, _, _| get("/api/v1/search?q=list", key).body(Body::empty()).unwrap())
}

/// Each upload has bytes of its own (the same bytes again would be a dedup hit, another path).
fn upload_64k(expected: u16) -> Fixture {
    Fixture::new(expected, |key, _, n| {
        let body = bytes(64 * 1024).into_iter().map(|b| b ^ (n as u8 + 1)).collect();
        upload_request(key, &format!("upload-{n}.bin"), body)
    })
}

fn auth_warm_key(expected: u16) -> Fixture {
    Fixture::new(expected, |key, _, _| get("/api/v1/users/me", key).body(Body::empty()).unwrap())
}

fn auth_refused(expected: u16) -> Fixture {
    Fixture::new(expected, |_, _, _| get("/api/v1/users/me", UNKNOWN_KEY).body(Body::empty()).unwrap())
}

#[library_benchmark]
#[bench::metadata_get(args = (200), setup = metadata_get)]
#[bench::download_small(args = (200), setup = download_small)]
#[bench::download_range(args = (206), setup = download_range)]
#[bench::revalidate(args = (304), setup = revalidate)]
#[bench::list_page(args = (200), setup = list_page)]
#[bench::search_cached(args = (200), setup = search_cached)]
#[bench::upload_64k(args = (201), setup = upload_64k)]
#[bench::auth_warm_key(args = (200), setup = auth_warm_key)]
#[bench::auth_refused(args = (401), setup = auth_refused)]
fn request(fixture: Fixture) -> (Fixture, usize) {
    black_box(fixture).run()
}

library_benchmark_group!(name = hot_requests; benchmarks = request);

main!(
    config = LibraryBenchmarkConfig::default()
        .tool(Callgrind::with_args(["--collect-atstart=no"]).entry_point(EntryPoint::Custom("*counted_poll*".into())));
    library_benchmark_groups = hot_requests
);
