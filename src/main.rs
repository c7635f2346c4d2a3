//! `labelfleet`: run LLM self-labelling, retraining and evaluation jobs on a fleet of
//! workers that poll a queue.
//!
//! One binary with subcommands: `enqueue`, `worker`, `launch`, `status`, `run`,
//! `results`, `report`, `redrive`, `upload-dataset`, `ingest`, `setup` and
//! `generate-runs`. Linked or copied under a subcommand's name (`enqueue`, `worker`, …)
//! it acts as that subcommand, so `worker --once` and `labelfleet worker --once` are
//! the same. Exit statuses: 0, 1 for an error, 75 when the backends could not be
//! reached, 78 when a setting is wrong (see `cli::Exit`).

mod cli;
mod dataset;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
