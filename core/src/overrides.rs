//! `--set path.to.key=value` and `--unset path` overrides, applied to a job document
//! before it is validated.
//!
//! A `--set` value is typed by the schema: it is tried as JSON first (`8`, `true`,
//! `["a"]`) and as a plain string second, and the first form the job schema accepts at
//! that path wins. So `--set eval.max_dialogues=8` gives a number and
//! `--set group_id=8` gives the string `"8"`.

use serde_json::{Map, Value};

use crate::job::JobError;

/// One override from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// Set the value at `path`, creating objects along the way.
    Set {
        /// The dotted path, split into keys (numbers index lists).
        path: Vec<String>,
        /// The value as typed.
        raw: String,
    },
    /// Remove the key at `path`.
    Unset {
        /// The dotted path, split into keys.
        path: Vec<String>,
    },
}

impl Override {
    /// Parses the argument of `--set`: `path.to.key=value`.
    pub fn parse_set(arg: &str) -> Result<Override, String> {
        let (path, raw) = arg
            .split_once('=')
            .ok_or_else(|| format!("`--set {arg}`: expected path.to.key=value"))?;
        Ok(Override::Set {
            path: split_path(path).map_err(|e| format!("`--set {arg}`: {e}"))?,
            raw: raw.to_string(),
        })
    }

    /// Parses the argument of `--unset`: `path.to.key`.
    pub fn parse_unset(arg: &str) -> Result<Override, String> {
        Ok(Override::Unset {
            path: split_path(arg).map_err(|e| format!("`--unset {arg}`: {e}"))?,
        })
    }

    /// The override as it was written, for provenance.
    pub fn describe(&self) -> String {
        match self {
            Override::Set { path, raw } => format!("--set {}={raw}", path.join(".")),
            Override::Unset { path } => format!("--unset {}", path.join(".")),
        }
    }

    fn path(&self) -> &[String] {
        match self {
            Override::Set { path, .. } | Override::Unset { path } => path,
        }
    }
}

fn split_path(path: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("the path has an empty part".into());
    }
    Ok(parts)
}

/// Applies overrides in order. `validate` checks a candidate document against the job
/// schema; it decides how each `--set` value is typed (see the module docs).
pub fn apply(
    document: &Value,
    overrides: &[Override],
    file: &str,
    validate: impl Fn(&Value) -> Result<(), JobError>,
) -> Result<Value, JobError> {
    let mut current = document.clone();
    for ov in overrides {
        current = match ov {
            Override::Unset { path } => {
                let mut next = current;
                if !remove_at(&mut next, path) {
                    return Err(JobError {
                        file: file.to_string(),
                        path: path.join("."),
                        message: format!("{}: there is nothing at this path", ov.describe()),
                    });
                }
                next
            }
            Override::Set { path, raw } => {
                let mut candidates = Vec::new();
                if let Ok(parsed) = serde_json::from_str::<Value>(raw) {
                    candidates.push(parsed);
                }
                candidates.push(Value::String(raw.clone()));
                let mut chosen = None;
                for candidate in candidates {
                    let mut next = current.clone();
                    set_at(&mut next, path, candidate).map_err(|message| JobError {
                        file: file.to_string(),
                        path: path.join("."),
                        message: format!("{}: {message}", ov.describe()),
                    })?;
                    let accepted = match validate(&next) {
                        Ok(()) => true,
                        Err(e) => !error_is_at(&e.path, ov.path()),
                    };
                    if accepted {
                        chosen = Some(next);
                        break;
                    }
                    chosen.get_or_insert(next);
                }
                chosen.expect("at least one candidate")
            }
        };
    }
    Ok(current)
}

/// Whether a validation error at `error_path` concerns the value at `path`.
fn error_is_at(error_path: &str, path: &[String]) -> bool {
    let dotted = path.join(".");
    error_path == dotted
        || error_path.starts_with(&format!("{dotted}."))
        || error_path.starts_with(&format!("{dotted}["))
        // serde reports an unknown variant or a missing field at the enclosing object
        || dotted.starts_with(&format!("{error_path}."))
}

pub(crate) fn set_at(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut node = root;
    for key in parents {
        node = match node {
            Value::Object(map) => map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                let index: usize = key
                    .parse()
                    .map_err(|_| format!("`{key}` indexes a list; use a number"))?;
                items
                    .get_mut(index)
                    .ok_or_else(|| format!("index {index} is past the end of the list"))?
            }
            _ => return Err(format!("cannot descend into `{key}`: not an object")),
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index: usize = last
                .parse()
                .map_err(|_| format!("`{last}` indexes a list; use a number"))?;
            match index.cmp(&items.len()) {
                std::cmp::Ordering::Less => items[index] = value,
                std::cmp::Ordering::Equal => items.push(value),
                std::cmp::Ordering::Greater => {
                    return Err(format!("index {index} is past the end of the list"));
                }
            }
            Ok(())
        }
        _ => Err(format!("cannot set `{last}`: its parent is not an object")),
    }
}

fn remove_at(root: &mut Value, path: &[String]) -> bool {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut node = root;
    for key in parents {
        let next = match node {
            Value::Object(map) => map.get_mut(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match node {
        Value::Object(map) => map.remove(last).is_some(),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, ProvenancePolicy};
    use serde_json::json;

    fn validate(v: &Value) -> Result<(), JobError> {
        Job::parse(v.clone(), "f.json", Some("j"), ProvenancePolicy::Reject).map(|_| ())
    }

    fn base() -> Value {
        json!({"kind": "eval", "group_id": "g", "eval": {
            "gold": {"path": "g.json", "format": "icdst"},
            "predictions": {"baseline": "empty"}}})
    }

    fn apply_args(sets: &[&str], unsets: &[&str]) -> Result<Value, JobError> {
        let mut ovs: Vec<Override> = sets
            .iter()
            .map(|s| Override::parse_set(s).unwrap())
            .collect();
        ovs.extend(unsets.iter().map(|s| Override::parse_unset(s).unwrap()));
        apply(&base(), &ovs, "f.json", validate)
    }

    #[test]
    fn set_values_are_typed_by_the_schema() {
        let v = apply_args(
            &["eval.max_dialogues=8", "group_id=8", "eval.gold.format=sgd"],
            &[],
        )
        .unwrap();
        assert_eq!(v["eval"]["max_dialogues"], json!(8));
        assert_eq!(v["group_id"], json!("8"));
        assert_eq!(v["eval"]["gold"]["format"], json!("sgd"));
        validate(&v).unwrap();
    }

    #[test]
    fn set_creates_objects_and_replaces_enum_variants() {
        let v = apply_args(&["eval.predictions={\"file\":\"p.json\"}"], &[]).unwrap();
        assert_eq!(v["eval"]["predictions"], json!({"file": "p.json"}));
    }

    #[test]
    fn a_value_the_schema_rejects_stays_an_error_with_its_path() {
        let v = apply_args(&["eval.max_dialogues=many"], &[]).unwrap();
        let err = validate(&v).unwrap_err();
        assert_eq!(err.path, "eval.max_dialogues");
    }

    #[test]
    fn unset_removes_and_complains_about_missing_paths() {
        let v = apply_args(&["eval.max_dialogues=3"], &["eval.max_dialogues"]).unwrap();
        assert!(v["eval"].get("max_dialogues").is_none());
        let err = apply_args(&[], &["eval.nothing"]).unwrap_err();
        assert_eq!(err.path, "eval.nothing");
    }

    #[test]
    fn malformed_arguments_are_rejected() {
        assert!(Override::parse_set("novalue").is_err());
        assert!(Override::parse_set("a..b=1").is_err());
        assert_eq!(
            Override::parse_set("a.b=1").unwrap().describe(),
            "--set a.b=1"
        );
    }
}
