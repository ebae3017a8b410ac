//! The data a run reads, made through the public API before the run, and found again by later runs.
//!
//! Accounts are users named `fwb-lt-NNNN`; seeded files are `seed-NNNNN.bin|png`, public, owned by account
//! `N % accounts`. A file whose bytes are not what this scenario would upload (the size mix changed, say)
//! is deleted and uploaded again. Keys cannot be found again (the service shows a key once), so each run
//! issues one key per account and revokes it at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{SeedableRng, rngs::SmallRng};
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::content::Content;
use crate::scenario::{Seed, SizeWeight};

/// Requests in flight while seeding.
const PARALLEL: usize = 8;
/// Side of seeded PNGs, in pixels.
const IMAGE_SIDE: u32 = 256;

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// This run's key.
    pub key: String,
    pub key_id: String,
}

#[derive(Debug)]
pub struct SeedFile {
    pub id: String,
    pub name: String,
    pub content: Content,
    pub hash: String,
    pub image: bool,
}

#[derive(Debug)]
pub struct DataSet {
    pub accounts: Vec<Account>,
    pub files: Vec<SeedFile>,
    /// Indices into `files` of the images.
    pub images: Vec<usize>,
    /// Files found from an earlier run, and files uploaded now.
    pub reused: usize,
    pub uploaded: usize,
}

#[derive(Debug, Deserialize)]
struct UserRow {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct KeyRow {
    id: String,
    secret: String,
}

#[derive(Debug, Deserialize)]
pub struct FileRow {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_hash: String,
    pub visibility: String,
    #[serde(default)]
    pub thumbnail: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FilePage {
    pub items: Vec<FileRow>,
    pub next_cursor: Option<String>,
}

/// A client for the API with a key.
#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = Client::builder().timeout(timeout).build()?;
        Ok(Api { client, base: base.trim_end_matches('/').to_owned() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.with_context(|| what.to_owned())?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("{what}: {status} {}", body.chars().take(300).collect::<String>());
        }
        Ok(response)
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str, path: &str) -> anyhow::Result<T> {
        let what = format!("GET {path}");
        Ok(self.call(self.client.get(self.url(path)).bearer_auth(key), &what).await?.json().await?)
    }

    pub async fn delete(&self, key: &str, path: &str) -> anyhow::Result<()> {
        let what = format!("DELETE {path}");
        self.call(self.client.delete(self.url(path)).bearer_auth(key), &what).await?;
        Ok(())
    }

    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let what = format!("POST {path}");
        Ok(self.call(self.client.post(self.url(path)).bearer_auth(key).json(&body), &what).await?.json().await?)
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&self, deadline: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let last = match self.client.get(self.url("/health/ready")).send().await {
                Ok(r) if r.status() == StatusCode::OK => return Ok(()),
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > deadline {
                bail!("{} is not ready after {deadline:?}: {last}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn all_files(&self, key: &str) -> anyhow::Result<Vec<FileRow>> {
        let mut files = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/files?limit=1000&cursor={c}"),
                None => "/api/v1/files?limit=1000".to_owned(),
            };
            let page: FilePage = self.get_json(key, &path).await?;
            files.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(files),
            }
        }
    }

    pub async fn upload(
        &self,
        key: &str,
        name: &str,
        bytes: Vec<u8>,
        visibility: &str,
        tags: &str,
    ) -> anyhow::Result<FileRow> {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()))
            .text("visibility", visibility.to_owned())
            .text("tags", tags.to_owned());
        let what = format!("upload {name}");
        Ok(self
            .call(self.client.post(self.url("/api/v1/files")).bearer_auth(key).multipart(form), &what)
            .await?
            .json()
            .await?)
    }
}

pub fn account_name(i: usize) -> String {
    format!("fwb-lt-{i:04}")
}

pub fn seed_name(i: usize, image: bool) -> String {
    format!("seed-{i:05}.{}", if image { "png" } else { "bin" })
}

/// The `i`th seeded file of this seed description: the same on every run.
pub fn seed_content(seed: &Seed, i: usize) -> (bool, Content) {
    let f = seed.image_fraction;
    let image = ((i + 1) as f64 * f).floor() > (i as f64 * f).floor();
    if image {
        return (true, Content::png(&seed_name(i, true), IMAGE_SIDE));
    }
    let mut rng = SmallRng::seed_from_u64(i as u64);
    let size = pick_size(&seed.sizes, &mut rng);
    (false, Content::stream(format!("seed-{i}-{size}"), size))
}

pub fn pick_size(sizes: &[SizeWeight], rng: &mut SmallRng) -> u64 {
    let weights = WeightedIndex::new(sizes.iter().map(|s| s.weight)).expect("validated weights");
    sizes[weights.sample(rng)].size.as_u64()
}

/// Makes sure the accounts and files exist, issues this run's keys, and waits for the images' thumbnails.
pub async fn seed(api: &Api, admin_key: &str, seed: &Seed) -> anyhow::Result<DataSet> {
    let existing: Vec<UserRow> =
        api.get_json(admin_key, "/api/v1/users").await.context("listing users (is the key an admin's?)")?;
    let by_name: HashMap<String, String> = existing.into_iter().map(|u| (u.name, u.id)).collect();
    let accounts: Vec<Account> = stream::iter(0..seed.accounts)
        .map(|i| {
            let known = by_name.get(&account_name(i)).cloned();
            async move {
                let name = account_name(i);
                let id = match known {
                    Some(id) => id,
                    None => {
                        let user: UserRow =
                            api.post_json(admin_key, "/api/v1/users", json!({ "name": name, "role": "user" })).await?;
                        user.id
                    }
                };
                let key: KeyRow = api.post_json(admin_key, &format!("/api/v1/users/{id}/keys"), json!({})).await?;
                anyhow::Ok(Account { id, name, key: key.secret, key_id: key.id })
            }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;

    // What each account has already.
    let present: Vec<HashMap<String, FileRow>> = stream::iter(accounts.iter())
        .map(|a| async move {
            let files = api.all_files(&a.key).await?;
            anyhow::Ok(files.into_iter().map(|f| (f.name.clone(), f)).collect())
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let present = Arc::new(present);

    let accounts_ref = &accounts;
    let results: Vec<(SeedFile, bool)> = stream::iter(0..seed.files)
        .map(|i| {
            let present = present.clone();
            async move {
                let (image, content) = seed_content(seed, i);
                let name = seed_name(i, image);
                let (bytes, hash) = content.bytes_and_hash();
                let owner = &accounts_ref[i % accounts_ref.len()];
                let found = present[i % accounts_ref.len()].get(&name);
                if let Some(row) = found {
                    if row.content_hash == hash && row.size == content.len() && row.visibility == "public" {
                        let file = SeedFile { id: row.id.clone(), name, content, hash, image };
                        return anyhow::Ok((file, true));
                    }
                    api.delete(&owner.key, &format!("/api/v1/files/{}", row.id)).await?;
                }
                let row = api.upload(&owner.key, &name, bytes, "public", "seed,loadtest").await?;
                if row.content_hash != hash {
                    bail!("uploaded {name} and the service reports hash {}, expected {hash}", row.content_hash);
                }
                Ok((SeedFile { id: row.id, name, content, hash, image }, false))
            }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let reused = results.iter().filter(|(_, reused)| *reused).count();
    let files: Vec<SeedFile> = results.into_iter().map(|(f, _)| f).collect();
    let images: Vec<usize> = files.iter().enumerate().filter(|(_, f)| f.image).map(|(i, _)| i).collect();
    wait_for_thumbnails(api, &accounts, &files, &images).await?;
    Ok(DataSet { accounts, uploaded: files.len() - reused, files, images, reused })
}

async fn wait_for_thumbnails(
    api: &Api,
    accounts: &[Account],
    files: &[SeedFile],
    images: &[usize],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let key = &accounts[0].key;
    for &i in images {
        loop {
            let row: FileRow = api.get_json(key, &format!("/api/v1/files/{}", files[i].id)).await?;
            match row.thumbnail.as_deref() {
                Some("ready") => break,
                Some("failed") => bail!("the service could not thumbnail {}", files[i].name),
                _ if Instant::now() > deadline => bail!("thumbnails of the seeded images are not ready after 300 s"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

/// Revokes this run's keys.
pub async fn release(api: &Api, admin_key: &str, data: &DataSet) -> anyhow::Result<()> {
    stream::iter(data.accounts.iter())
        .map(|a| async move { api.delete(admin_key, &format!("/api/v1/users/{}/keys/{}", a.id, a.key_id)).await })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await
}
