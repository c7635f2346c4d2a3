//! tracing set-up: text on a terminal, JSON lines with `--log-json`; always on stderr,
//! through [`Redacting`], so that no level prints a credential.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::GlobalArgs;
use super::redact::Redacting;

/// Installs the global subscriber.
pub fn init(args: &GlobalArgs) {
    // The AWS SDK's own warnings (credential and region probing) are noise to a user;
    // failures reach them as labelfleet's errors. `--log aws_config=debug` shows them.
    let quiet_sdk = "aws_config=error,aws_smithy_runtime=error,aws_smithy_runtime_api=error";
    let directives = if args.log.contains("aws_") {
        args.log.clone()
    } else {
        format!("{},{quiet_sdk}", args.log)
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting);
    if args.log_json {
        builder.json().with_current_span(true).init();
    } else {
        // Colour only on a terminal, so logs piped to files stay plain text.
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}
