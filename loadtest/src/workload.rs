//! What FileWallBall's users do: the scenario's request mix over the seeded data, each answer checked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use fwb_reports::Class;
use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand_distr::Zipf;
use reqwest::header::{self, HeaderMap};

use crate::content::Content;
use crate::pacing::{Performed, Planned, UserCtx, Workload};
use crate::scenario::{RequestKind, Scenario, SizeWeight};
use crate::seed::{DataSet, FilePage, FileRow, SeedFile, pick_size};

/// Page size of listings and searches.
const PAGE: u32 = 10;
/// Longest range asked for.
const MAX_RANGE: u64 = 64 * 1024;

/// A file uploaded during the run: its account may rename and delete it.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub id: String,
    pub name: String,
}

pub struct FileService {
    /// The mix's requests, in the order of `weights`.
    kinds: Vec<RequestKind>,
    /// Every request's class, the stand-ins' included.
    classes: BTreeMap<RequestKind, Class>,
    weights: WeightedIndex<f64>,
    data: Arc<DataSet>,
    /// Rank (1-based) of the file read, by popularity.
    popularity: Zipf<f64>,
    image_popularity: Option<Zipf<f64>>,
    upload_sizes: Vec<SizeWeight>,
    /// Per account, its uploads of this run not yet deleted.
    uploads: Vec<Mutex<Vec<Uploaded>>>,
    run_tag: String,
    counter: AtomicU64,
}

impl FileService {
    pub fn new(scenario: &Scenario, data: Arc<DataSet>, run_tag: String) -> Self {
        let kinds: Vec<RequestKind> = scenario.mix.keys().copied().collect();
        let classes = RequestKind::ALL.iter().map(|&k| (k, scenario.class_of(k))).collect();
        let weights = WeightedIndex::new(scenario.mix.values().map(|e| e.weight)).expect("validated weights");
        let s = scenario.seed.zipf_exponent;
        let popularity = Zipf::new(data.files.len() as f64, s).expect("validated exponent");
        let image_popularity =
            (!data.images.is_empty()).then(|| Zipf::new(data.images.len() as f64, s).expect("validated"));
        let uploads = (0..data.accounts.len()).map(|_| Mutex::new(Vec::new())).collect();
        FileService {
            kinds,
            classes,
            weights,
            data,
            popularity,
            image_popularity,
            upload_sizes: scenario.uploads.sizes.clone(),
            uploads,
            run_tag,
            counter: AtomicU64::new(0),
        }
    }

    /// Uploads of this run that are still there, per account index, for cleaning up.
    pub fn leftovers(&self) -> Vec<(usize, Vec<Uploaded>)> {
        self.uploads.iter().enumerate().map(|(i, m)| (i, std::mem::take(&mut *m.lock().unwrap()))).collect()
    }

    fn popular(&self, ctx: &mut UserCtx) -> &SeedFile {
        let rank = self.popularity.sample(&mut ctx.rng) as usize;
        &self.data.files[rank.clamp(1, self.data.files.len()) - 1]
    }

    fn popular_image(&self, ctx: &mut UserCtx) -> Option<&SeedFile> {
        let zipf = self.image_popularity.as_ref()?;
        let rank = zipf.sample(&mut ctx.rng) as usize;
        Some(&self.data.files[self.data.images[rank.clamp(1, self.data.images.len()) - 1]])
    }

    fn take_upload(&self, account: usize, ctx: &mut UserCtx) -> Option<Uploaded> {
        let mut pool = self.uploads[account].lock().unwrap();
        if pool.is_empty() {
            return None;
        }
        let i = ctx.rng.random_range(0..pool.len());
        Some(pool.swap_remove(i))
    }

    fn class(&self, kind: RequestKind) -> Class {
        self.classes[&kind]
    }
}

/// One answer, read to the end.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// Sends one request through goose (which counts it) and reads the whole body.
async fn send(
    user: &mut GooseUser,
    kind: RequestKind,
    method: GooseMethod,
    path: &str,
    expect: u16,
    key: &str,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (Instant, Result<Answer, String>, Option<GooseRequestMetric>) {
    let sent = Instant::now();
    let builder = match user.get_request_builder(&method, path) {
        Ok(b) => build(b.bearer_auth(key)),
        Err(e) => return (sent, Err(format!("building the request: {e}")), None),
    };
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(kind.name())
        .expect_status_code(expect)
        .set_request_builder(builder)
        .build();
    let sent = Instant::now();
    let (metric, response) = match user.request(request).await {
        Ok(goose) => (goose.request, goose.response),
        Err(e) => return (sent, Err(format!("{e}")), None),
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => return (sent, Err(format!("no answer: {e}")), Some(metric)),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let answer = match response.bytes().await {
        Ok(body) => Ok(Answer { status, headers, body }),
        Err(e) => Err(format!("reading the body: {e}")),
    };
    (sent, answer, Some(metric))
}

fn expect_status(answer: &Answer, expected: u16) -> Result<(), String> {
    if answer.status == expected {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&answer.body);
    // The error code of the service's error shape, if there is one, is what tells failures apart.
    let code = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(80).collect());
    Err(format!("status {} (expected {expected}): {code}", answer.status))
}

fn json<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, String> {
    serde_json::from_slice(&answer.body).map_err(|e| format!("unexpected body: {e}"))
}

impl FileService {
    async fn list(&self, user: &mut GooseUser, ctx: &mut UserCtx, key: &str, kind: RequestKind) -> Performed {
        let path = match (&ctx.cursor, kind) {
            (Some(cursor), RequestKind::ListNextPage) => format!("/api/v1/files?limit={PAGE}&cursor={cursor}"),
            _ => format!("/api/v1/files?limit={PAGE}"),
        };
        let kind = if path.contains("cursor=") { RequestKind::ListNextPage } else { RequestKind::ListFiles };
        let (sent, answer, goose) = send(user, kind, GooseMethod::Get, &path, 200, key, |b| b).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 200)?;
            let page: FilePage = json(&a)?;
            if page.items.len() > PAGE as usize {
                return Err(format!("{} items on a page of {PAGE}", page.items.len()));
            }
            ctx.cursor = page.next_cursor;
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn get_metadata(&self, user: &mut GooseUser, ctx: &mut UserCtx, key: &str) -> Performed {
        let file = self.popular(ctx);
        let path = format!("/api/v1/files/{}", file.id);
        let kind = RequestKind::GetMetadata;
        let (sent, answer, goose) = send(user, kind, GooseMethod::Get, &path, 200, key, |b| b).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 200)?;
            let row: FileRow = json(&a)?;
            if row.id != file.id || row.content_hash != file.hash {
                return Err(format!("metadata of another file or content: {} {}", row.id, row.content_hash));
            }
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn search(&self, user: &mut GooseUser, ctx: &mut UserCtx, key: &str) -> Performed {
        // Four digits of a popular file's number: matches that file and a handful of others.
        let needle = self.popular(ctx).name[7..11].to_owned();
        let path = format!("/api/v1/search?q={needle}&limit={PAGE}");
        let kind = RequestKind::Search;
        let (sent, answer, goose) = send(user, kind, GooseMethod::Get, &path, 200, key, |b| b).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 200)?;
            let page: FilePage = json(&a)?;
            if page.items.is_empty() {
                return Err(format!("no match for {needle:?}, which a seeded file's name contains"));
            }
            if let Some(miss) = page.items.iter().find(|f| !f.name.to_lowercase().contains(&needle)) {
                return Err(format!("{:?} does not contain {needle:?}", miss.name));
            }
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn download(&self, user: &mut GooseUser, ctx: &mut UserCtx, key: &str) -> Performed {
        let file = self.popular(ctx);
        let path = format!("/api/v1/files/{}/content", file.id);
        let kind = RequestKind::Download;
        let (sent, answer, goose) = send(user, kind, GooseMethod::Get, &path, 200, key, |b| b).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 200)?;
            if a.body.len() as u64 != file.content.len() {
                return Err(format!("{} bytes of a {}-byte file", a.body.len(), file.content.len()));
            }
            if blake3::hash(&a.body).to_hex().as_str() != file.hash {
                return Err("the bytes differ from the file's".into());
            }
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn download_range(&self, user: &mut GooseUser, ctx: &mut UserCtx, key: &str) -> Performed {
        let file = self.popular(ctx);
        let size = file.content.len();
        let start = ctx.rng.random_range(0..size);
        let len = ctx.rng.random_range(1..=MAX_RANGE).min(size - start);
        let range = format!("bytes={start}-{}", start + len - 1);
        let path = format!("/api/v1/files/{}/content", file.id);
        let kind = RequestKind::DownloadRange;
        let (sent, answer, goose) =
            send(user, kind, GooseMethod::Get, &path, 206, key, |b| b.header(header::RANGE, &range)).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 206)?;
            let expected_range = format!("bytes {start}-{}/{size}", start + len - 1);
            let got = a.headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if got != expected_range {
                return Err(format!("Content-Range {got:?} for {range}"));
            }
            if a.body[..] != file.content.slice(start, len)[..] {
                return Err(format!("the bytes of {range} differ from the file's"));
            }
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn revalidate(&self, user: &mut GooseUser, ctx: &mut UserCtx, key: &str) -> Performed {
        let file = self.popular(ctx);
        let etag = format!("\"{}\"", file.hash);
        let path = format!("/api/v1/files/{}/content", file.id);
        let kind = RequestKind::Revalidate;
        let (sent, answer, goose) =
            send(user, kind, GooseMethod::Get, &path, 304, key, |b| b.header(header::IF_NONE_MATCH, &etag)).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 304)?;
            if !a.body.is_empty() {
                return Err("a 304 with a body".into());
            }
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn thumbnail(&self, user: &mut GooseUser, file: &SeedFile, key: &str) -> Performed {
        let path = format!("/api/v1/files/{}/thumbnail?size=small", file.id);
        let kind = RequestKind::Thumbnail;
        let (sent, answer, goose) = send(user, kind, GooseMethod::Get, &path, 200, key, |b| b).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 200)?;
            if !a.body.starts_with(&[0xFF, 0xD8, 0xFF]) {
                return Err("a thumbnail that is not a JPEG".into());
            }
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn upload(&self, user: &mut GooseUser, ctx: &mut UserCtx, account: usize, key: &str) -> Performed {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let size = pick_size(&self.upload_sizes, &mut ctx.rng);
        let name = format!("upload-{}-{n:06}.bin", self.run_tag);
        let (bytes, hash) = Content::stream(&name, size).bytes_and_hash();
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.clone()))
            .text("visibility", "private")
            .text("tags", "loadtest");
        let kind = RequestKind::Upload;
        let (sent, answer, goose) =
            send(user, kind, GooseMethod::Post, "/api/v1/files", 201, key, |b| b.multipart(form)).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 201)?;
            let row: FileRow = json(&a)?;
            if row.size != size || row.content_hash != hash {
                return Err(format!(
                    "stored {} bytes hashing {}, sent {size} hashing {hash}",
                    row.size, row.content_hash
                ));
            }
            self.uploads[account].lock().unwrap().push(Uploaded { id: row.id, name: row.name });
            Ok(a.status)
        });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn rename(&self, user: &mut GooseUser, file: Uploaded, account: usize, key: &str) -> Performed {
        let path = format!("/api/v1/files/{}", file.id);
        let new_name = format!("renamed-{}", file.name);
        let body = serde_json::json!({ "name": new_name });
        let kind = RequestKind::Rename;
        let (sent, answer, goose) = send(user, kind, GooseMethod::Patch, &path, 200, key, |b| b.json(&body)).await;
        let verdict = answer.and_then(|a| {
            expect_status(&a, 200)?;
            let row: FileRow = json(&a)?;
            if row.name != new_name {
                return Err(format!("renamed to {:?}, asked for {new_name:?}", row.name));
            }
            Ok(a.status)
        });
        // Renamed or not, the file is still there to delete later.
        self.uploads[account].lock().unwrap().push(Uploaded { id: file.id, name: new_name });
        self.finish(user, kind, sent, verdict, goose)
    }

    async fn delete(&self, user: &mut GooseUser, file: Uploaded, account: usize, key: &str) -> Performed {
        let path = format!("/api/v1/files/{}", file.id);
        let kind = RequestKind::Delete;
        let (sent, answer, goose) = send(user, kind, GooseMethod::Delete, &path, 204, key, |b| b).await;
        let verdict = answer.and_then(|a| expect_status(&a, 204).map(|()| a.status));
        if verdict.is_err() {
            self.uploads[account].lock().unwrap().push(file);
        }
        self.finish(user, kind, sent, verdict, goose)
    }

    /// Counts a wrong answer as a failure in goose's figures too, and turns the outcome into a [`Performed`].
    fn finish(
        &self,
        user: &mut GooseUser,
        kind: RequestKind,
        sent: Instant,
        verdict: Result<u16, String>,
        goose: Option<GooseRequestMetric>,
    ) -> Performed {
        let status = goose.as_ref().map(|g| g.status_code).filter(|&s| s != 0);
        if let (Err(message), Some(mut metric)) = (&verdict, goose)
            && metric.success
        {
            let _ = user.set_failure(message, &mut metric, None, None);
        }
        Performed { name: kind.name(), class: self.class(kind), sent, status, error: verdict.err() }
    }
}

#[async_trait]
impl Workload for FileService {
    fn plan(&self, ctx: &mut UserCtx) -> Planned {
        let index = self.weights.sample(&mut ctx.rng);
        let kind = self.kinds[index];
        Planned { name: kind.name(), class: self.class(kind), kind: index }
    }

    async fn perform(&self, planned: Planned, user: &mut GooseUser, ctx: &mut UserCtx) -> Performed {
        self.perform_kind(self.kinds[planned.kind], user, ctx).await
    }
}

impl FileService {
    /// One request of `kind` (or its stand-in, see below) as user `ctx`.
    pub async fn perform_kind(&self, kind: RequestKind, user: &mut GooseUser, ctx: &mut UserCtx) -> Performed {
        let account = ctx.index % self.data.accounts.len();
        let key = self.data.accounts[account].key.clone();
        // Requests that need something the user does not have yet do the nearest thing instead:
        // paging without a page seen lists the first page; renaming or deleting with nothing uploaded reads metadata.
        match kind {
            RequestKind::ListFiles | RequestKind::ListNextPage => self.list(user, ctx, &key, kind).await,
            RequestKind::GetMetadata => self.get_metadata(user, ctx, &key).await,
            RequestKind::Search => self.search(user, ctx, &key).await,
            RequestKind::Download => self.download(user, ctx, &key).await,
            RequestKind::DownloadRange => self.download_range(user, ctx, &key).await,
            RequestKind::Revalidate => self.revalidate(user, ctx, &key).await,
            RequestKind::Thumbnail => match self.popular_image(ctx) {
                Some(file) => self.thumbnail(user, file, &key).await,
                None => self.get_metadata(user, ctx, &key).await,
            },
            RequestKind::Upload => self.upload(user, ctx, account, &key).await,
            RequestKind::Rename => match self.take_upload(account, ctx) {
                Some(file) => self.rename(user, file, account, &key).await,
                None => self.get_metadata(user, ctx, &key).await,
            },
            RequestKind::Delete => match self.take_upload(account, ctx) {
                Some(file) => self.delete(user, file, account, &key).await,
                None => self.get_metadata(user, ctx, &key).await,
            },
        }
    }
}
