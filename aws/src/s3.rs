//! Artifacts in S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use labelfleet_core::artifacts::{ArtifactKey, ArtifactStore};
use labelfleet_core::error::{BackendError, BackendResult};

use crate::errors::{classify, code};

/// Objects at or above this size are uploaded in parts of this size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
const CHECKSUM_KEY: &str = "labelfleet-sha256";

/// Artifacts as objects `s3://bucket/prefix/<key>`, each with its SHA-256 in the
/// object's metadata, checked on every read.
#[derive(Clone)]
pub struct S3ArtifactStore {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
}

/// An object being read, and how to check what is read of it.
struct Fetched {
    response: aws_sdk_s3::operation::get_object::GetObjectOutput,
    check: Recorded,
}

/// What an object's upload recorded.
struct Recorded {
    /// The call, for messages: `S3 GetObject s3://bucket/key`.
    op: String,
    /// The SHA-256 recorded at upload, if any.
    expected: Option<String>,
}

impl Recorded {
    /// Checks the bytes read against the SHA-256 recorded at upload.
    fn verify(&self, actual: String) -> BackendResult<()> {
        match &self.expected {
            Some(expected) if *expected != actual => Err(BackendError::Other(format!(
                "{}: the object's SHA-256 does not match the one recorded at upload; it is corrupt (re-run the job that wrote it)",
                self.op
            ))),
            _ => Ok(()),
        }
    }
}

impl S3ArtifactStore {
    /// Starts reading the object under `key`; `None` if there is none.
    async fn get_object(&self, key: &ArtifactKey) -> BackendResult<Option<Fetched>> {
        let object = self.object_key(key.as_str());
        let op = format!("S3 GetObject s3://{}/{object}", self.bucket);
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if code(&e) == Some("NoSuchKey") => return Ok(None),
            Err(e) => return Err(classify(&op, e)),
        };
        let expected = response
            .metadata()
            .and_then(|m| m.get(CHECKSUM_KEY))
            .cloned();
        Ok(Some(Fetched {
            response,
            check: Recorded { op, expected },
        }))
    }

    /// A store in `bucket` under `prefix` (may be empty).
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str, prefix: &str) -> S3ArtifactStore {
        // Path-style addressing works with every endpoint (S3-compatible stores, emulators).
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build();
        S3ArtifactStore {
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            part_size: PART_SIZE,
        }
    }

    /// The store at `url` (`s3://bucket/prefix`), with the SDK configuration from the
    /// standard chain, checked for a region and credentials before any call.
    pub async fn open(url: &str) -> BackendResult<S3ArtifactStore> {
        let (bucket, prefix) = crate::config::parse_s3_location(url).ok_or_else(|| {
            BackendError::Invalid(format!("`{url}`: expected s3://bucket/prefix"))
        })?;
        let sdk = crate::config::load_sdk_config().await;
        crate::config::check_sdk_config(&sdk).await?;
        Ok(S3ArtifactStore::new(&sdk, bucket, prefix))
    }

    /// Uses parts of `bytes` bytes for multipart uploads (S3's minimum is 5 MiB).
    pub fn with_part_size(mut self, bytes: usize) -> S3ArtifactStore {
        self.part_size = bytes.max(5 * 1024 * 1024);
        self
    }

    /// The client, for set-up.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Uploads `bytes` in parts.
    async fn put_multipart(&self, object: &str, bytes: &[u8], checksum: &str) -> BackendResult<()> {
        let chunks: Vec<&[u8]> = bytes.chunks(self.part_size).collect();
        self.upload_parts(object, chunks.len(), checksum, |i| {
            let part = chunks[i].to_vec();
            async move { Ok(part) }
        })
        .await
    }

    /// Uploads the `size` bytes of the file at `path` in parts, reading one part at a
    /// time.
    async fn put_file_multipart(
        &self,
        object: &str,
        path: &std::path::Path,
        size: u64,
        checksum: &str,
    ) -> BackendResult<()> {
        let part_size = self.part_size as u64;
        let parts = size.div_ceil(part_size) as usize;
        let file = std::sync::Arc::new(
            std::fs::File::open(path)
                .map_err(|e| BackendError::Other(format!("reading {}: {e}", path.display())))?,
        );
        self.upload_parts(object, parts, checksum, |i| {
            let file = file.clone();
            let offset = i as u64 * part_size;
            let len = part_size.min(size - offset) as usize;
            let shown = path.display().to_string();
            async move {
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut part = vec![0u8; len];
                    file.read_exact_at(&mut part, offset).map(|_| part)
                })
                .await
                .map_err(|e| BackendError::Other(format!("reading {shown}: {e}")))?
                .map_err(|e| BackendError::Other(format!("reading {shown}: {e}")))
            }
        })
        .await
    }

    /// A multipart upload of `parts` parts, each read by `read_part(index)` when it is
    /// sent: only one part is in memory at a time. The upload is aborted if any step
    /// fails.
    async fn upload_parts<F, Fut>(
        &self,
        object: &str,
        parts: usize,
        checksum: &str,
        mut read_part: F,
    ) -> BackendResult<()>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = BackendResult<Vec<u8>>>,
    {
        let op = format!("S3 multipart upload of s3://{}/{object}", self.bucket);
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object)
            .metadata(CHECKSUM_KEY, checksum)
            .send()
            .await
            .map_err(|e| classify(&op, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut done = Vec::with_capacity(parts);
            for i in 0..parts {
                let chunk = read_part(i).await?;
                let number = i as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(object)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| classify(&op, e))?;
                done.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(done))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| classify(&op, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    fn describe(&self) -> String {
        format!("artifacts in s3://{}/{}", self.bucket, self.prefix)
    }

    async fn check(&self) -> BackendResult<()> {
        let op = format!("S3 HeadBucket s3://{}", self.bucket);
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            // A HEAD answer has no body, so a missing bucket comes back as a bare 404.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(BackendError::Other(format!(
                    "{op}: the bucket does not exist; create the queue, table and bucket with `labelfleet setup`"
                )))
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
                Err(BackendError::Other(format!(
                    "{op}: access denied; grant the role or user that runs labelfleet access to the bucket"
                )))
            }
            Err(e) => Err(classify(&op, e)),
        }
    }

    async fn put(&self, key: &ArtifactKey, bytes: Vec<u8>) -> BackendResult<()> {
        let object = self.object_key(key.as_str());
        let checksum = labelfleet_core::hash::sha256_hex(&bytes);
        // S3 makes an object visible only once it is complete, so both paths are atomic.
        if bytes.len() >= self.part_size {
            return self.put_multipart(&object, &bytes, &checksum).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .metadata(CHECKSUM_KEY, &checksum)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| classify(&format!("S3 PutObject s3://{}/{object}", self.bucket), e))?;
        Ok(())
    }

    async fn put_file(&self, key: &ArtifactKey, path: &std::path::Path) -> BackendResult<()> {
        let unreadable =
            |e: std::io::Error| BackendError::Other(format!("reading {}: {e}", path.display()));
        let size = std::fs::metadata(path).map_err(unreadable)?.len();
        if size < self.part_size as u64 {
            let bytes = tokio::fs::read(path).await.map_err(unreadable)?;
            return self.put(key, bytes).await;
        }
        let owned = path.to_path_buf();
        let checksum =
            tokio::task::spawn_blocking(move || labelfleet_core::hash::sha256_file_hex(&owned))
                .await
                .map_err(|e| BackendError::Other(format!("hashing {}: {e}", path.display())))?
                .map_err(unreadable)?;
        let object = self.object_key(key.as_str());
        self.put_file_multipart(&object, path, size, &checksum)
            .await
    }

    async fn get(&self, key: &ArtifactKey) -> BackendResult<Option<Vec<u8>>> {
        let Some(Fetched { response, check }) = self.get_object(key).await? else {
            return Ok(None);
        };
        let op = &check.op;
        let bytes = response
            .body
            .collect()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{op}: reading the body: {e}")))?
            .into_bytes()
            .to_vec();
        check.verify(labelfleet_core::hash::sha256_hex(&bytes))?;
        Ok(Some(bytes))
    }

    /// Streams the object into the file a chunk at a time, checking its SHA-256 as it
    /// goes; a corrupt download leaves no file behind.
    async fn get_file(&self, key: &ArtifactKey, path: &std::path::Path) -> BackendResult<bool> {
        use tokio::io::AsyncWriteExt;
        let Some(Fetched {
            mut response,
            check,
        }) = self.get_object(key).await?
        else {
            return Ok(false);
        };
        let op = &check.op;
        let local =
            |e: std::io::Error| BackendError::Other(format!("writing {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut hasher = labelfleet_core::hash::Sha256Stream::default();
        while let Some(chunk) = response
            .body
            .try_next()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{op}: reading the body: {e}")))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        drop(file);
        if let Err(e) = check.verify(hasher.finish_hex()) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(true)
    }

    /// S3's DeleteObject succeeds for a key that is not there, as the trait asks.
    async fn delete(&self, key: &ArtifactKey) -> BackendResult<()> {
        let object = self.object_key(key.as_str());
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| classify(&format!("S3 DeleteObject s3://{}/{object}", self.bucket), e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ArtifactKey>> {
        let prefix = prefix.trim_end_matches('/');
        let full = self.object_key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| {
                    classify(&format!("S3 ListObjectsV2 s3://{}/{full}", self.bucket), e)
                })?;
            for object in page.contents() {
                let Some(k) = object.key() else { continue };
                let relative = &k[strip.min(k.len())..];
                let inside = prefix.is_empty()
                    || relative == prefix
                    || relative.starts_with(&format!("{prefix}/"));
                if inside && let Ok(key) = ArtifactKey::new(relative) {
                    keys.push(key);
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn locate(&self, key: &ArtifactKey) -> String {
        format!("s3://{}/{}", self.bucket, self.object_key(key.as_str()))
    }
}
