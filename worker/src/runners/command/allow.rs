//! The worker's allow-list: which program names a `command` job may use, the
//! executable each one maps to, and which of the worker's environment variables a
//! program may see.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use labelfleet_core::job::is_valid_id;

/// Variables every program gets from the worker's environment, when set: enough to
/// find executables and a home, and to see the GPUs the worker was given. Anything
/// else (credentials above all) passes only when the operator names it.
pub const BASE_ENV: [&str; 7] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "CUDA_VISIBLE_DEVICES",
];

/// The programs a worker runs for `command` jobs, and the environment they may see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    programs: BTreeMap<String, PathBuf>,
    pass_env: Vec<String>,
}

impl AllowList {
    /// Adds `NAME=PATH` (from `--allow-command`); the path must be an absolute path to
    /// an executable file. The error says what is wrong with the entry.
    pub fn allow(&mut self, entry: &str) -> Result<(), String> {
        let Some((name, path)) = entry.split_once('=') else {
            return Err(format!(
                "`{entry}`: expected NAME=PATH, such as train=/opt/jobs/train.py"
            ));
        };
        let (name, path) = (name.trim(), Path::new(path.trim()));
        if !is_valid_id(name) {
            return Err(format!(
                "`{name}`: a program's name is 1 to 80 letters, digits, `_`, `-` or `.`"
            ));
        }
        if !path.is_absolute() {
            return Err(format!(
                "{name}: `{}` is not an absolute path; give the executable's full path",
                path.display()
            ));
        }
        let metadata = std::fs::metadata(path)
            .map_err(|e| format!("{name}: cannot use `{}`: {e}", path.display()))?;
        if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
            return Err(format!(
                "{name}: `{}` is not an executable file (chmod +x it, or name its interpreter)",
                path.display()
            ));
        }
        if let Some(old) = self.programs.get(name)
            && old != path
        {
            return Err(format!(
                "{name}: allowed twice, as `{}` and `{}`",
                old.display(),
                path.display()
            ));
        }
        self.programs.insert(name.to_string(), path.to_path_buf());
        Ok(())
    }

    /// Adds every `NAME=PATH` line of a file (`--commands FILE`); blank lines and
    /// lines starting with `#` are skipped. Errors name the file and line.
    pub fn allow_file(&mut self, file: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--commands {}: {e}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // A relative path is relative to the file's folder, so that a workflow's
            // folder can carry its own allow-list beside its scripts.
            let entry = match line.split_once('=') {
                Some((name, path)) if Path::new(path.trim()).is_relative() => {
                    let folder = file.parent().unwrap_or(Path::new("."));
                    let joined = folder.join(path.trim());
                    let full = joined.canonicalize().map_err(|e| {
                        format!(
                            "{} line {}: {name}: cannot use `{}`: {e}",
                            file.display(),
                            i + 1,
                            joined.display()
                        )
                    })?;
                    format!("{name}={}", full.display())
                }
                _ => line.to_string(),
            };
            self.allow(&entry)
                .map_err(|e| format!("{} line {}: {e}", file.display(), i + 1))?;
        }
        Ok(())
    }

    /// Lets programs see the worker's variable `name` (`--pass-env`).
    pub fn pass_env(&mut self, name: &str) -> Result<(), String> {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("`{name}` is not an environment variable's name"));
        }
        if !self.pass_env.iter().any(|n| n == name) {
            self.pass_env.push(name.to_string());
        }
        Ok(())
    }

    /// The executable a name maps to.
    pub fn program(&self, name: &str) -> Option<&Path> {
        self.programs.get(name).map(PathBuf::as_path)
    }

    /// The names allowed, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.programs.keys().map(String::as_str).collect()
    }

    /// The worker's variables a program inherits: [`BASE_ENV`] and the passed ones,
    /// where the worker has them.
    pub fn inherited_env(&self) -> Vec<(String, String)> {
        BASE_ENV
            .iter()
            .copied()
            .chain(self.pass_env.iter().map(String::as_str))
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_an_absolute_executable() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("train.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let mut list = AllowList::default();
        let entry = format!("train={}", script.display());
        let err = list.allow(&entry).unwrap_err();
        assert!(err.contains("not an executable file"), "{err}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        list.allow(&entry).unwrap();
        assert_eq!(list.program("train"), Some(script.as_path()));
        assert_eq!(list.program("other"), None);
        for bad in [
            "train",
            "x=relative/path",
            "a b=/bin/true",
            "x=/no/such/file",
        ] {
            assert!(list.allow(bad).is_err(), "{bad}");
        }
        let err = list.allow("train=/bin/true").unwrap_err();
        assert!(err.contains("allowed twice"), "{err}");
    }

    #[test]
    fn a_commands_file_names_the_line_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("commands");
        std::fs::write(&file, "# programs\n\ntrue=/bin/true\nbroken\n").unwrap();
        let err = AllowList::default().allow_file(&file).unwrap_err();
        assert!(err.contains("line 4"), "{err}");
        std::fs::write(&file, "true=/bin/true\n").unwrap();
        let mut list = AllowList::default();
        list.allow_file(&file).unwrap();
        assert_eq!(list.names(), ["true"]);
    }

    #[test]
    fn a_relative_path_in_a_commands_file_is_relative_to_its_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runs/flow")).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        let script = dir.path().join("scripts/step.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("runs/flow/commands.txt");
        std::fs::write(&file, "step=../../scripts/step.sh\n").unwrap();
        let mut list = AllowList::default();
        list.allow_file(&file).unwrap();
        assert_eq!(
            list.program("step"),
            Some(script.canonicalize().unwrap().as_path())
        );
        std::fs::write(&file, "gone=../../scripts/missing.sh\n").unwrap();
        let err = AllowList::default().allow_file(&file).unwrap_err();
        assert!(
            err.contains("line 1: gone: cannot use") && err.contains("missing.sh"),
            "{err}"
        );
    }

    #[test]
    fn only_named_variables_pass() {
        let mut list = AllowList::default();
        assert!(list.pass_env("AWS_SECRET_ACCESS_KEY=x").is_err());
        list.pass_env("LABELFLEET_TEST_PASSED").unwrap();
        // SAFETY: this test alone reads or writes these variables.
        unsafe {
            std::env::set_var("LABELFLEET_TEST_PASSED", "yes");
            std::env::set_var("LABELFLEET_TEST_SECRET", "no");
        }
        let env = list.inherited_env();
        assert!(env.contains(&("LABELFLEET_TEST_PASSED".into(), "yes".into())));
        assert!(!env.iter().any(|(k, _)| k == "LABELFLEET_TEST_SECRET"));
    }
}
