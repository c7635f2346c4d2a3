//! Settings of an `ingest` job: raw interaction logs (`logs.tar.gz` per session) into
//! a de-duplicated dataset, as `labelfleet ingest` does, as a step of a chain.
//!
//! ```json
//! "ingest": {
//!   "from": "collect",
//!   "csv": "interaction_loggings.csv",
//!   "text_column": "command"
//! }
//! ```

use serde::{Deserialize, Serialize};

use super::{is_plain_relative_path, is_valid_id};

/// Settings of an `ingest` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSpec {
    /// An earlier job (`name` in the same group, or `group/name`) whose artifacts named
    /// `…/logs.tar.gz` are the archives; a session is the folder above each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Or a folder on the worker to search for `logs.tar.gz` archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The pipe-delimited CSV to read inside each archive.
    #[serde(default = "default_csv")]
    pub csv: String,
    /// The column holding the command text, which rows are de-duplicated by.
    #[serde(default = "default_text_column")]
    pub text_column: String,
}

fn default_csv() -> String {
    "interaction_loggings.csv".into()
}

fn default_text_column() -> String {
    "command".into()
}

impl IngestSpec {
    /// Checks what serde cannot; the error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        match (&self.from, &self.path) {
            (Some(from), None) => {
                if !from.splitn(2, '/').all(is_valid_id) {
                    return Err((
                        "ingest.from".into(),
                        "expected a job: `name` in the same group, or `group/name`".into(),
                    ));
                }
            }
            (None, Some(path)) if path.trim().is_empty() => {
                return Err(("ingest.path".into(), "expected a folder".into()));
            }
            (None, Some(_)) => {}
            _ => {
                return Err((
                    "ingest.from".into(),
                    "give exactly one of `from` (an earlier job whose artifacts are the \
                     archives) and `path` (a folder on the worker)"
                        .into(),
                ));
            }
        }
        if !is_plain_relative_path(&self.csv) {
            return Err((
                "ingest.csv".into(),
                "expected the CSV's name inside each archive".into(),
            ));
        }
        if self.text_column.trim().is_empty() {
            return Err(("ingest.text_column".into(), "name a column".into()));
        }
        Ok(())
    }

    /// The group and name of the job whose artifacts are the archives, for a job in
    /// `group`.
    pub fn source<'a>(&'a self, group: &'a str) -> Option<(&'a str, &'a str)> {
        Some(super::job_ref(self.from.as_deref()?, group))
    }
}
