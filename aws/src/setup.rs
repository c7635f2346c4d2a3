//! Creating the queue (with its dead-letter queue and redrive policy), the table and the
//! bucket. Every step is idempotent: running it again changes nothing but the redrive
//! policy and visibility timeout, which it brings up to date.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use labelfleet_core::error::{BackendError, BackendResult};

use crate::config::AwsTarget;
use crate::errors::{classify, code};
use crate::table::{PK, SK};

/// What [`setup`] found or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// The queue's URL.
    pub queue_url: String,
    /// The dead-letter queue's URL.
    pub dead_letter_url: String,
    /// One line per resource: created, or already there.
    pub lines: Vec<String>,
}

/// Creates (or updates) the fleet's resources.
pub async fn setup(
    sdk: &aws_config::SdkConfig,
    target: &AwsTarget,
    max_receives: u32,
    visibility_secs: u32,
) -> BackendResult<SetupReport> {
    let mut lines = Vec::new();
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let name = target.queue_name();
    let dlq_name = format!("{}-dlq.fifo", name.trim_end_matches(".fifo"));
    let dlq_url = create_queue(
        &sqs,
        &dlq_name,
        vec![(QueueAttributeName::MessageRetentionPeriod, "1209600".into())],
        &mut lines,
    )
    .await?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify(&format!("SQS GetQueueAttributes {dlq_url}"), e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| BackendError::Other(format!("SQS gave no ARN for {dlq_url}")))?;
    let redrive = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives.to_string()}).to_string();
    let settings = vec![
        (QueueAttributeName::RedrivePolicy, redrive),
        (
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        ),
        (
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            "20".into(),
        ),
    ];
    let queue_url = create_queue(&sqs, &name, settings.clone(), &mut lines).await?;
    let mut update = sqs.set_queue_attributes().queue_url(&queue_url);
    for (k, v) in settings {
        update = update.attributes(k, v);
    }
    update
        .send()
        .await
        .map_err(|e| classify(&format!("SQS SetQueueAttributes {queue_url}"), e))?;

    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let attribute = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))
    };
    match dynamo
        .create_table()
        .table_name(&target.table)
        .attribute_definitions(attribute(PK)?)
        .attribute_definitions(attribute(SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => lines.push(format!("created DynamoDB table {}", target.table)),
        Err(e) if code(&e) == Some("ResourceInUseException") => {
            lines.push(format!("DynamoDB table {} already exists", target.table))
        }
        Err(e) => {
            return Err(classify(
                &format!("DynamoDB CreateTable {}", target.table),
                e,
            ));
        }
    }

    let s3 = crate::S3ArtifactStore::new(sdk, &target.bucket, &target.prefix);
    let mut create = s3.client().create_bucket().bucket(&target.bucket);
    if let Some(region) = sdk.region().map(|r| r.as_ref().to_string())
        && region != "us-east-1"
    {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => lines.push(format!("created S3 bucket {}", target.bucket)),
        Err(e)
            if matches!(
                code(&e),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) =>
        {
            lines.push(format!("S3 bucket {} already exists", target.bucket))
        }
        Err(e) => return Err(classify(&format!("S3 CreateBucket {}", target.bucket), e)),
    }
    Ok(SetupReport {
        queue_url,
        dead_letter_url: dlq_url,
        lines,
    })
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    settings: Vec<(QueueAttributeName, String)>,
    lines: &mut Vec<String>,
) -> BackendResult<String> {
    let mut request = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true");
    for (k, v) in settings {
        request = request.attributes(k, v);
    }
    match request.send().await {
        Ok(out) => {
            lines.push(format!("created SQS FIFO queue {name}"));
            Ok(out.queue_url().unwrap_or_default().to_string())
        }
        Err(e)
            if matches!(
                code(&e),
                Some(
                    "QueueAlreadyExists"
                        | "QueueNameExists"
                        | "AWS.SimpleQueueService.QueueNameExists"
                )
            ) =>
        {
            lines.push(format!("SQS queue {name} already exists"));
            let out = sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| classify(&format!("SQS GetQueueUrl {name}"), e))?;
            Ok(out.queue_url().unwrap_or_default().to_string())
        }
        Err(e) => Err(classify(&format!("SQS CreateQueue {name}"), e)),
    }
}
