//! Opening the configured backends: the embedded default under `--home`, or AWS when
//! `--queue`, `--manifest` and `--artifacts` are given.

use std::sync::Arc;

use anyhow::{Context, bail};
use labelfleet_aws::{
    AwsTarget, DynamoBoard, DynamoManifest, S3ArtifactStore, Spill, SqsQueue, check_sdk_config,
    load_sdk_config,
};
use labelfleet_core::error::BackendError;
use labelfleet_embedded::EmbeddedHome;
use labelfleet_worker::Backends;

use super::{Exit, GlobalArgs};

/// Whether a command may create the embedded home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// It writes (enqueue, worker, run): a missing home is created.
    Create,
    /// It only reads (status, results, report, …): a missing home is a mistyped
    /// `--home`, and creating an empty one would hide that.
    ReadOnly,
}

/// The default redrive limit of the embedded queue.
pub const DEFAULT_MAX_RECEIVES: u32 = EmbeddedHome::DEFAULT_MAX_RECEIVES;

/// Opened backends, and the queue's own redrive limit when it has one (SQS).
pub struct Opened {
    /// The backends.
    pub backends: Backends,
    /// `maxReceiveCount` of the queue's redrive policy, on SQS.
    pub redrive_max_receives: Option<u32>,
}

/// The AWS resources named on the command line, if any.
pub fn aws_target(global: &GlobalArgs) -> anyhow::Result<Option<AwsTarget>> {
    match (&global.queue, &global.manifest, &global.artifacts) {
        (None, None, None) => Ok(None),
        (Some(q), Some(m), Some(a)) => Ok(Some(AwsTarget::parse(q, m, a)?)),
        _ => bail!(
            "to use AWS, give all three of --queue (LABELFLEET_QUEUE), --manifest dynamodb://TABLE (LABELFLEET_MANIFEST) \
             and --artifacts s3://BUCKET/PREFIX (LABELFLEET_ARTIFACTS); give none of them for the embedded default"
        ),
    }
}

/// Opens the configured backends. `max_receives` applies to the embedded queue; SQS has
/// its own in the redrive policy (see `labelfleet setup`). Errors carry an [`Exit`]
/// status: unreachable backends are [`Exit::TEMPFAIL`], anything else that a backend
/// refuses (a missing queue, table, home) is [`Exit::CONFIG`].
pub async fn open(
    global: &GlobalArgs,
    max_receives: u32,
    access: Access,
) -> anyhow::Result<Opened> {
    open_backends(global, max_receives, access)
        .await
        .map_err(|e| {
            let code = match e.chain().find_map(|c| c.downcast_ref::<BackendError>()) {
                Some(BackendError::Unavailable(_)) => Exit::TEMPFAIL,
                Some(_) => Exit::CONFIG,
                None => return e,
            };
            anyhow::Error::new(Exit::new(code, format!("{e:#}")))
        })
}

async fn open_backends(
    global: &GlobalArgs,
    max_receives: u32,
    access: Access,
) -> anyhow::Result<Opened> {
    let Some(target) = aws_target(global)? else {
        if access == Access::ReadOnly && !global.home.is_dir() {
            return Err(Exit::new(
                Exit::CONFIG,
                format!(
                    "there is no labelfleet home at {}: check --home or LABELFLEET_HOME \
                     (`labelfleet enqueue` creates a home when it first sends jobs)",
                    global.home.display()
                ),
            )
            .into());
        }
        let home = EmbeddedHome::new(&global.home);
        let context = || format!("cannot open the labelfleet home {}", global.home.display());
        return Ok(Opened {
            backends: Backends {
                queue: Arc::new(home.queue(max_receives).with_context(context)?),
                manifest: Arc::new(home.manifest().with_context(context)?),
                artifacts: Arc::new(home.artifacts()),
                board: Arc::new(home.board().with_context(context)?),
            },
            redrive_max_receives: None,
        });
    };
    let sdk = load_sdk_config().await;
    check_sdk_config(&sdk).await?;
    let artifacts = Arc::new(S3ArtifactStore::new(&sdk, &target.bucket, &target.prefix));
    let spill = Spill::new(artifacts.clone());
    let queue = SqsQueue::connect(&sdk, &target.queue, Some(spill.clone()))
        .await
        .context("connecting to the SQS queue")?;
    let redrive = queue.max_receives();
    Ok(Opened {
        backends: Backends {
            queue: Arc::new(queue),
            manifest: Arc::new(DynamoManifest::new(
                &sdk,
                &target.table,
                Some(spill.clone()),
            )),
            artifacts,
            board: Arc::new(DynamoBoard::new(&sdk, &target.table, Some(spill))),
        },
        redrive_max_receives: Some(redrive),
    })
}
