//! The Hugging Face Hub's HTTP API, as much of it as publishing a dataset needs.
//!
//! A [`Hub`] holds the endpoint (`HF_ENDPOINT`, else `https://huggingface.co`) and a
//! token ([`find_token`]: `HF_TOKEN`, else the token file `huggingface-cli login`
//! writes). Publishing is four steps, the same ones `huggingface_hub` takes:
//!
//! 1. [`Hub::create_dataset`]: `POST /api/repos/create`, private unless asked; a 409
//!    means the repository is already there.
//! 2. [`Hub::file`] and [`Hub::files`] read what an existing repository holds
//!    (`resolve/main/…` and `tree/main`), so the caller can tell its own dataset from
//!    someone else's.
//! 3. [`Hub::commit`] asks `preupload` which files go to LFS (parquet does); those are
//!    announced to the LFS batch endpoint by SHA-256, `PUT` to the address it returns
//!    (skipped when the Hub has the object already) and verified.
//! 4. One commit (`POST /api/datasets/{id}/commit/main`, NDJSON) adds every file —
//!    small ones inline as base64, LFS ones by hash — and deletes stale ones, so a
//!    reader sees the old dataset or the new one, never a mix.
//!
//! Transient failures (connection errors, 429, 5xx) are retried with a doubling delay;
//! other errors name the step, the status and the Hub's message, and say what to do.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Attempts per request before a transient failure is reported.
const ATTEMPTS: u32 = 4;

/// The token to write with, and where it came from (for messages; never the token).
pub fn find_token() -> Option<(String, String)> {
    if let Ok(token) = std::env::var("HF_TOKEN")
        && !token.trim().is_empty()
    {
        return Some((token.trim().to_string(), "HF_TOKEN".into()));
    }
    let file = token_file()?;
    let token = std::fs::read_to_string(&file).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| (token.to_string(), file.display().to_string()))
}

/// Where `huggingface-cli login` keeps the token: `HF_TOKEN_PATH`, else
/// `$HF_HOME/token`, else `$XDG_CACHE_HOME/huggingface/token`, else
/// `~/.cache/huggingface/token`.
pub fn token_file() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("HF_TOKEN_PATH") {
        return Some(PathBuf::from(path));
    }
    let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|cache| cache.join("huggingface"))
    })?;
    Some(home.join("token"))
}

/// Checks `owner/name` against the Hub's rules for repository ids, so a bad name fails
/// before anything is sent.
pub fn check_repo_id(repo_id: &str) -> anyhow::Result<()> {
    let Some((owner, name)) = repo_id.split_once('/') else {
        anyhow::bail!("`{repo_id}` is not a Hub repository id: expected owner/name");
    };
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
            && !part.contains("--")
            && !part.contains("..")
    };
    if !valid(owner) || !valid(name) || name.len() > 96 {
        anyhow::bail!(
            "`{repo_id}` is not a valid Hub repository id: owner and name may hold letters, digits, `-`, `_` and `.`, not at either end nor doubled, and the name at most 96 characters"
        );
    }
    Ok(())
}

/// A client of one Hub with one token.
pub struct Hub {
    endpoint: String,
    token: String,
    http: reqwest::Client,
}

/// One file of a commit: its path in the repository, its bytes, and their SHA-256
/// (the LFS object id), computed once.
pub struct FileToAdd {
    path: String,
    bytes: Vec<u8>,
    sha256: String,
}

impl FileToAdd {
    /// The file `bytes` at `path` (`/`-separated) in the repository.
    pub fn new(path: String, bytes: Vec<u8>) -> FileToAdd {
        let sha256 = labelfleet_core::hash::sha256_hex(&bytes);
        FileToAdd {
            path,
            bytes,
            sha256,
        }
    }
}

#[derive(Deserialize)]
struct PreuploadAnswer {
    files: Vec<PreuploadFile>,
}

#[derive(Deserialize)]
struct PreuploadFile {
    path: String,
    #[serde(rename = "uploadMode")]
    upload_mode: String,
}

#[derive(Deserialize)]
struct LfsBatchAnswer {
    objects: Vec<LfsObject>,
}

#[derive(Deserialize)]
struct LfsObject {
    oid: String,
    #[serde(default)]
    actions: Option<LfsActions>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct LfsActions {
    upload: Option<LfsAction>,
    verify: Option<LfsAction>,
}

#[derive(Deserialize)]
struct LfsAction {
    href: String,
    #[serde(default)]
    header: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl Hub {
    /// A client of `HF_ENDPOINT` (else the public Hub) with the token [`find_token`]
    /// finds; without one, an error that says how to provide it.
    pub fn from_env() -> anyhow::Result<Hub> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let Some((token, source)) = find_token() else {
            anyhow::bail!(
                "no Hugging Face token: set HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens), or run `huggingface-cli login`, which writes {}",
                token_file()
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "~/.cache/huggingface/token".into())
            );
        };
        tracing::debug!(%endpoint, token_from = %source, "Hugging Face Hub");
        Hub::new(&endpoint, &token)
    }

    /// A client of `endpoint` that sends `token`.
    pub fn new(endpoint: &str, token: &str) -> anyhow::Result<Hub> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("labelfleet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    /// The dataset's page.
    pub fn page(&self, repo_id: &str) -> String {
        format!("{}/datasets/{repo_id}", self.endpoint)
    }

    /// Creates the dataset repository `owner/name`; `false` when it already exists
    /// (its visibility is then left as it is).
    pub async fn create_dataset(&self, repo_id: &str, private: bool) -> anyhow::Result<bool> {
        let (owner, name) = repo_id.split_once('/').context("owner/name")?;
        let body =
            json!({"name": name, "organization": owner, "private": private, "type": "dataset"});
        let url = format!("{}/api/repos/create", self.endpoint);
        let response = self
            .send("creating the dataset repository", &[409], || {
                self.http.post(&url).bearer_auth(&self.token).json(&body)
            })
            .await?;
        Ok(response.status() != reqwest::StatusCode::CONFLICT)
    }

    /// The bytes of `path` on the main branch; `None` when there is no such file.
    pub async fn file(&self, repo_id: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let url = format!("{}/datasets/{repo_id}/resolve/main/{path}", self.endpoint);
        let response = self
            .send(&format!("reading {path}"), &[404], || {
                self.http.get(&url).bearer_auth(&self.token)
            })
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(response.bytes().await?.to_vec()))
    }

    /// Every file on the main branch (following the listing's pages).
    pub async fn files(&self, repo_id: &str) -> anyhow::Result<Vec<String>> {
        let mut url = format!(
            "{}/api/datasets/{repo_id}/tree/main?recursive=true",
            self.endpoint
        );
        let mut files = Vec::new();
        loop {
            let response = self
                .send("listing the repository's files", &[], || {
                    self.http.get(&url).bearer_auth(&self.token)
                })
                .await?;
            let next = next_page(response.headers());
            let entries: Vec<TreeEntry> = response
                .json()
                .await
                .context("the Hub's file listing is not what was expected")?;
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| e.kind == "file")
                    .map(|e| e.path),
            );
            match next {
                Some(next) => url = next,
                None => return Ok(files),
            }
        }
    }

    /// One commit to the main branch that adds `files` and deletes `delete`.
    pub async fn commit(
        &self,
        repo_id: &str,
        summary: &str,
        files: &[FileToAdd],
        delete: &[String],
    ) -> anyhow::Result<()> {
        let lfs = self.lfs_paths(repo_id, files).await?;
        let lfs_files: Vec<&FileToAdd> = files.iter().filter(|f| lfs.contains(&f.path)).collect();
        self.upload_lfs(repo_id, &lfs_files).await?;

        let mut lines =
            vec![json!({"key": "header", "value": {"summary": summary, "description": ""}})];
        for file in files {
            lines.push(if lfs.contains(&file.path) {
                json!({"key": "lfsFile", "value": {
                    "path": file.path, "algo": "sha256", "oid": file.sha256, "size": file.bytes.len()
                }})
            } else {
                json!({"key": "file", "value": {
                    "path": file.path, "encoding": "base64", "content": BASE64.encode(&file.bytes)
                }})
            });
        }
        for path in delete {
            lines.push(json!({"key": "deletedFile", "value": {"path": path}}));
        }
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let url = format!("{}/api/datasets/{repo_id}/commit/main", self.endpoint);
        self.send("committing the dataset", &[], || {
            self.http
                .post(&url)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone())
        })
        .await?;
        Ok(())
    }

    /// The paths among `files` that the repository keeps in LFS.
    async fn lfs_paths(
        &self,
        repo_id: &str,
        files: &[FileToAdd],
    ) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let body = json!({"files": files.iter().map(|f| json!({
            "path": f.path,
            "sample": BASE64.encode(&f.bytes[..f.bytes.len().min(512)]),
            "size": f.bytes.len(),
            "sha": f.sha256,
        })).collect::<Vec<_>>()});
        let url = format!("{}/api/datasets/{repo_id}/preupload/main", self.endpoint);
        let answer: PreuploadAnswer = self
            .send("asking which files go to LFS", &[], || {
                self.http.post(&url).bearer_auth(&self.token).json(&body)
            })
            .await?
            .json()
            .await
            .context("the Hub's preupload answer is not what was expected")?;
        Ok(answer
            .files
            .into_iter()
            .filter(|f| f.upload_mode == "lfs")
            .map(|f| f.path)
            .collect())
    }

    /// Uploads the LFS objects the Hub does not have yet.
    async fn upload_lfs(&self, repo_id: &str, files: &[&FileToAdd]) -> anyhow::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let body = json!({
            "operation": "upload",
            "transfers": ["basic"],
            "objects": files.iter().map(|f| json!({"oid": f.sha256, "size": f.bytes.len()})).collect::<Vec<_>>(),
            "hash_algo": "sha256",
            "ref": {"name": "main"},
        });
        let url = format!(
            "{}/datasets/{repo_id}.git/info/lfs/objects/batch",
            self.endpoint
        );
        const LFS_JSON: &str = "application/vnd.git-lfs+json";
        let answer: LfsBatchAnswer = self
            .send("announcing the LFS files", &[], || {
                self.http
                    .post(&url)
                    .bearer_auth(&self.token)
                    .header(reqwest::header::ACCEPT, LFS_JSON)
                    .header(reqwest::header::CONTENT_TYPE, LFS_JSON)
                    .body(body.to_string())
            })
            .await?
            .json()
            .await
            .context("the Hub's LFS batch answer is not what was expected")?;
        for object in answer.objects {
            let file = files
                .iter()
                .find(|f| f.sha256 == object.oid)
                .with_context(|| {
                    format!(
                        "the Hub answered for an LFS object {} that was not asked for",
                        object.oid
                    )
                })?;
            if let Some(error) = object.error {
                anyhow::bail!("the Hub refused the LFS upload of {}: {error}", file.path);
            }
            // No actions: the Hub has these bytes already.
            let Some(actions) = object.actions else {
                tracing::info!(file = %file.path, "already on the Hub");
                continue;
            };
            if let Some(upload) = actions.upload {
                tracing::info!(file = %file.path, bytes = file.bytes.len(), "uploading");
                // The address is presigned: it gets the headers the Hub gave, not our token.
                self.send(&format!("uploading {}", file.path), &[], || {
                    let mut put = self.http.put(&upload.href).body(file.bytes.clone());
                    for (name, value) in &upload.header {
                        put = put.header(name, value);
                    }
                    put
                })
                .await?;
            }
            if let Some(verify) = actions.verify {
                let check = json!({"oid": object.oid, "size": file.bytes.len()});
                self.send(&format!("verifying {}", file.path), &[], || {
                    let mut post = self
                        .http
                        .post(&verify.href)
                        .bearer_auth(&self.token)
                        .json(&check);
                    for (name, value) in &verify.header {
                        post = post.header(name, value);
                    }
                    post
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Sends the request `build` makes, retrying transient failures; a status that is
    /// neither a success nor in `expected` becomes an error naming `step`.
    async fn send(
        &self,
        step: &str,
        expected: &[u16],
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            match build().send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() || expected.contains(&status.as_u16()) {
                        return Ok(response);
                    }
                    let transient = status.is_server_error() || status.as_u16() == 429;
                    if !transient || last {
                        let body = response.text().await.unwrap_or_default();
                        return Err(http_error(step, status, &body, &self.endpoint));
                    }
                    tracing::warn!(step, %status, attempt, "the Hub failed; retrying");
                }
                Err(e) if !last => {
                    tracing::warn!(step, error = %e, attempt, "cannot reach the Hub; retrying");
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(e)
                        .context(format!("{step}: cannot reach the Hub at {}", self.endpoint)));
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        unreachable!("the last attempt returns")
    }
}

/// The error for a failed request: the step, the status, the Hub's own message, and
/// what to do about the usual causes.
fn http_error(
    step: &str,
    status: reqwest::StatusCode,
    body: &str,
    endpoint: &str,
) -> anyhow::Error {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect());
    let hint = match status.as_u16() {
        401 => {
            "; the token was refused: check HF_TOKEN or log in again with `huggingface-cli login`"
        }
        403 => {
            "; the token cannot write there: it needs the write role, and the owner must be you or an organisation you can write to"
        }
        404 => "; no such repository, or the token cannot see it",
        _ => "",
    };
    anyhow::anyhow!("{step}: the Hub ({endpoint}) answered {status}: {message}{hint}")
}

/// The next page of a listing, from its `Link: <url>; rel="next"` header.
fn next_page(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids_follow_the_hubs_rules() {
        check_repo_id("me/manifest_self_labelled_labels-demo_6_AbC_x12").unwrap();
        for bad in [
            "no-slash", "me/", "/name", "me/na me", "me/-name", "me/a--b", "a/b/c",
        ] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
        assert!(check_repo_id(&format!("me/{}", "a".repeat(97))).is_err());
    }

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(next_page(&headers), None);
        headers.insert(
            reqwest::header::LINK,
            "<https://hub/api/datasets/a/b/tree/main?cursor=x>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("https://hub/api/datasets/a/b/tree/main?cursor=x")
        );
    }
}
