//! JSON as job files use it: canonical text for hashing, syntax errors with line and
//! column, and typed reads whose errors name the JSON path.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::JobError;

/// Serialises a JSON value with object keys sorted at every level, so that equal values
/// always give equal text (and equal hashes).
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Parses JSON text, turning syntax errors into a [`JobError`] with line and column.
pub fn parse_json(text: &str, file: &str) -> Result<Value, JobError> {
    serde_json::from_str(text).map_err(|e| {
        let position = format!(" at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        let what = text.strip_suffix(&position).unwrap_or(&text);
        JobError::new(
            file,
            "",
            format!(
                "not valid JSON (line {}, column {}): {what}",
                e.line(),
                e.column()
            ),
        )
    })
}

pub(super) fn expect_string(value: Value, file: &str, path: &str) -> Result<String, JobError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(JobError::new(
            file,
            path,
            format!("expected a string, found {}", type_name(&other)),
        )),
    }
}

pub(super) fn deserialize_at<T: DeserializeOwned>(
    value: Value,
    file: &str,
    prefix: &str,
) -> Result<T, JobError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        JobError::new(file, path, e.into_inner().to_string())
    })
}

/// A short description of a JSON value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
