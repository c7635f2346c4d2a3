//! Opening the configured backends.

use std::sync::Arc;

use anyhow::Context;
use labelfleet_embedded::EmbeddedHome;
use labelfleet_worker::Backends;

use super::GlobalArgs;

/// Opens the embedded backends under `--home`.
pub fn open(global: &GlobalArgs, max_receives: u32) -> anyhow::Result<Backends> {
    let home = EmbeddedHome::new(&global.home);
    let context = || format!("cannot open the labelfleet home {}", global.home.display());
    Ok(Backends {
        queue: Arc::new(home.queue(max_receives).with_context(context)?),
        manifest: Arc::new(home.manifest().with_context(context)?),
        artifacts: Arc::new(home.artifacts()),
        board: Arc::new(home.board().with_context(context)?),
    })
}

/// The default redrive limit, for commands that only look at the queue.
pub const DEFAULT_MAX_RECEIVES: u32 = EmbeddedHome::DEFAULT_MAX_RECEIVES;
