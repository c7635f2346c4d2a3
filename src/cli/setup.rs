//! `labelfleet setup`: create the AWS resources (idempotent).

use labelfleet_aws::{check_sdk_config, load_sdk_config, setup};

use super::GlobalArgs;
use super::backends::{DEFAULT_MAX_RECEIVES, aws_target};

/// Arguments of `setup`.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// Receives after which SQS moves a message to the dead-letter queue (redrive
    /// policy; 1 to 1000).
    #[arg(long, default_value_t = DEFAULT_MAX_RECEIVES, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receives: u32,
    /// The queue's default visibility timeout in seconds, 0 to 43200 (workers set their
    /// own per receive).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=43_200))]
    pub visibility_timeout: u32,
}

/// Runs `setup`.
pub async fn run(global: &GlobalArgs, args: SetupArgs) -> anyhow::Result<()> {
    let Some(target) = aws_target(global)? else {
        println!(
            "nothing to set up for the embedded default: {} is created on first use; \
             for AWS pass --queue, --manifest dynamodb://TABLE and --artifacts s3://BUCKET/PREFIX",
            global.home.display()
        );
        return Ok(());
    };
    let sdk = load_sdk_config().await;
    check_sdk_config(&sdk).await?;
    let report = setup(
        &sdk,
        &target,
        args.max_receives.max(1),
        args.visibility_timeout,
    )
    .await?;
    for line in &report.lines {
        println!("{line}");
    }
    println!(
        "queue {} (dead letters: {})",
        report.queue_url, report.dead_letter_url
    );
    println!(
        "redrive: a message received {} times without an acknowledgement moves to the dead-letter queue",
        args.max_receives.max(1)
    );
    Ok(())
}
