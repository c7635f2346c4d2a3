//! Where the AWS backends live, and the SDK configuration.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use labelfleet_core::error::{BackendError, BackendResult};

/// The three AWS resources a fleet uses, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsTarget {
    /// The SQS FIFO queue: a URL, or a name (`.fifo` is added if missing).
    pub queue: String,
    /// The DynamoDB table for the manifest and the job board.
    pub table: String,
    /// The S3 bucket for artifacts.
    pub bucket: String,
    /// The key prefix inside the bucket (may be empty).
    pub prefix: String,
}

impl AwsTarget {
    /// Parses `--queue Q`, `--manifest dynamodb://TABLE` and `--artifacts
    /// s3://bucket/prefix`.
    pub fn parse(queue: &str, manifest: &str, artifacts: &str) -> BackendResult<AwsTarget> {
        let table = manifest
            .strip_prefix("dynamodb://")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                BackendError::Invalid(format!(
                    "--manifest `{manifest}`: expected dynamodb://TABLE"
                ))
            })?;
        let (bucket, prefix) = parse_s3_location(artifacts).ok_or_else(|| {
            BackendError::Invalid(format!(
                "--artifacts `{artifacts}`: expected s3://bucket/prefix"
            ))
        })?;
        if queue.is_empty() {
            return Err(BackendError::Invalid(
                "--queue: expected a queue URL or name".into(),
            ));
        }
        Ok(AwsTarget {
            queue: queue.to_string(),
            table: table.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The queue's name (the last part of a URL).
    pub fn queue_name(&self) -> String {
        let name = self.queue.rsplit('/').next().unwrap_or(&self.queue);
        if name.ends_with(".fifo") {
            name.to_string()
        } else {
            format!("{name}.fifo")
        }
    }
}

/// The bucket and key prefix of `s3://bucket/prefix` (the prefix may be empty); `None`
/// when `url` is not an S3 location with a bucket.
pub fn parse_s3_location(url: &str) -> Option<(&str, &str)> {
    let location = url.strip_prefix("s3://")?;
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    (!bucket.is_empty()).then_some((bucket, prefix))
}

/// Loads the SDK configuration from the standard chain (environment, profile, instance
/// role; `AWS_ENDPOINT_URL` is honoured), with timeouts that turn a hung backend into a
/// retryable error instead of a hung worker.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // Long polls wait up to 20 s.
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

/// Checks, before any call, that the SDK found a region and credentials, so that a
/// missing setting is reported as such (not as a retried network failure). Credentials
/// are loaded, never shown.
pub async fn check_sdk_config(sdk: &aws_config::SdkConfig) -> BackendResult<()> {
    use aws_sdk_sqs::config::ProvideCredentials;
    if sdk.region().is_none() {
        return Err(BackendError::Other(
            "no AWS region is configured: set AWS_REGION (or use a profile with a region)".into(),
        ));
    }
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| BackendError::Other("no AWS credentials provider is configured".into()))?;
    provider.provide_credentials().await.map_err(|_| {
        BackendError::Other(
            "no AWS credentials were found (environment, profile, SSO, or instance/task role): \
             set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run on a machine with a role"
                .into(),
        )
    })?;
    Ok(())
}
