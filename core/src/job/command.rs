//! Settings of a `command` job: run a program the worker allows, by name.
//!
//! A job names a program; it never gives a path or a shell line. Each worker maps
//! names to executables through its own allow-list (`worker --allow-command
//! NAME=PATH`), because the queue is a trust boundary: whoever can send a message must
//! not be able to run arbitrary code on every machine of the fleet.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::is_valid_id;

/// The longest a command may run, in seconds (a week).
pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// Settings of a `command` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program's name in the worker's allow-list.
    pub program: String,
    /// Its arguments, passed as they are (no shell sees them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Parameters, handed to the program as JSON in `LABELFLEET_PARAMS`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Artifacts of earlier jobs to fetch into `LABELFLEET_INPUT_DIR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<CommandInput>,
    /// Seconds the program may run before it is stopped (SIGTERM, then SIGKILL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// One artifact of an earlier job that a command reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandInput {
    /// The job that wrote it: `name` in the same group, or `group/name`. The command
    /// waits for it (it joins `after`).
    pub from: String,
    /// The artifact: a file that job's program wrote in its output folder (its path
    /// there), or the role its manifest entry names it by.
    pub path: String,
}

impl CommandInput {
    /// The group and name of the job it comes from, for a job in `group`.
    pub fn source<'a>(&'a self, group: &'a str) -> (&'a str, &'a str) {
        super::job_ref(&self.from, group)
    }
}

/// Whether `path` is a relative path of plain names (no `..`, no leading `/`, no
/// empty parts): safe to join under a folder the worker owns.
pub fn is_plain_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && path.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && !part.contains(['\\', '\0'])
        })
}

impl CommandSpec {
    /// Checks what serde cannot; the error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !is_valid_id(&self.program) {
            return Err((
                "command.program".into(),
                "expected the name of a program in the workers' allow-list (1 to 80 letters, \
                 digits, `_`, `-` or `.`), not a path or a shell command"
                    .into(),
            ));
        }
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return Err((
                format!("command.args[{i}]"),
                "an argument cannot hold a NUL byte".into(),
            ));
        }
        if let Some(t) = self.timeout_s
            && !(1..=MAX_TIMEOUT_S).contains(&t)
        {
            return Err((
                "command.timeout_s".into(),
                format!("expected 1 to {MAX_TIMEOUT_S} seconds"),
            ));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let valid_from = match input.from.split_once('/') {
                Some((g, n)) => is_valid_id(g) && is_valid_id(n),
                None => is_valid_id(&input.from),
            };
            if !valid_from {
                return Err((
                    format!("command.inputs[{i}].from"),
                    "expected a job: `name` in the same group or `group/name`".into(),
                ));
            }
            if !is_plain_relative_path(&input.path) {
                return Err((
                    format!("command.inputs[{i}].path"),
                    "expected a relative path such as `model.pkl` or `out/metrics.json` \
                     (no `..`, no leading `/`)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> Result<(), (String, String)> {
        serde_json::from_value::<CommandSpec>(value)
            .unwrap()
            .check()
    }

    #[test]
    fn a_program_is_a_name_never_a_path_or_a_shell_line() {
        assert!(spec(serde_json::json!({"program": "train-model"})).is_ok());
        for program in ["/bin/sh", "../x", "sh -c 'rm -rf /'", ""] {
            let (path, _) = spec(serde_json::json!({ "program": program })).unwrap_err();
            assert_eq!(path, "command.program");
        }
    }

    #[test]
    fn inputs_name_a_job_and_a_relative_path() {
        let ok =
            serde_json::json!({"program": "p", "inputs": [{"from": "g/j", "path": "a/b.pkl"}]});
        assert!(spec(ok).is_ok());
        for (from, path, field) in [
            ("g/j", "../etc/passwd", "command.inputs[0].path"),
            ("g/j", "/etc/passwd", "command.inputs[0].path"),
            ("g/j", "a//b", "command.inputs[0].path"),
            ("g/j/k", "a", "command.inputs[0].from"),
            ("", "a", "command.inputs[0].from"),
        ] {
            let value =
                serde_json::json!({"program": "p", "inputs": [{"from": from, "path": path}]});
            assert_eq!(spec(value).unwrap_err().0, field, "{from} {path}");
        }
    }

    #[test]
    fn a_timeout_is_checked_and_sources_resolve_in_the_job_group() {
        let value = serde_json::json!({"program": "p", "timeout_s": 0});
        assert_eq!(spec(value).unwrap_err().0, "command.timeout_s");
        let input = CommandInput {
            from: "train".into(),
            path: "m".into(),
        };
        assert_eq!(input.source("g"), ("g", "train"));
        let input = CommandInput {
            from: "other/train".into(),
            path: "m".into(),
        };
        assert_eq!(input.source("g"), ("other", "train"));
    }
}
