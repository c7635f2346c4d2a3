//! The job runners, one module per kind.

pub mod checkpoints;
pub mod eval;
pub mod noop;
pub mod retrain;
pub mod self_label;
pub mod tune;

use labelfleet_core::job::DatasetFormat;
use labelfleet_dst::Format;

/// The reader format for a job file's dataset format (the job spec lives in
/// `labelfleet-core`, which does not know the readers).
pub fn format_of(format: DatasetFormat) -> Format {
    match format {
        DatasetFormat::Multiwoz21 => Format::Multiwoz21,
        DatasetFormat::Icdst => Format::Icdst,
        DatasetFormat::Sgd => Format::Sgd,
    }
}
