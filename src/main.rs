//! `labelfleet`: run LLM self-labelling, retraining and evaluation jobs on a fleet of
//! workers that poll a queue.
//!
//! One binary with subcommands (`enqueue`, `worker`, `status`, `run`, `results`). Linked
//! or copied under a subcommand's name (`enqueue`, `worker`, …) it acts as that
//! subcommand, so `worker --once` and `labelfleet worker --once` are the same.

mod cli;
mod dataset;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
