//! tracing set-up: text on a terminal, JSON lines with `--log-json`; always on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::GlobalArgs;

/// Installs the global subscriber.
pub fn init(args: &GlobalArgs) {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
