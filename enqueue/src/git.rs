//! The git state of the repository that holds a runs folder.

use std::path::Path;
use std::process::Command;

/// The commit and cleanliness of the repository holding a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitState {
    /// `HEAD`'s commit, or `None` outside a repository.
    pub commit: Option<String>,
    /// Uncommitted or untracked files exist (always true outside a repository, since
    /// nothing pins the files).
    pub dirty: bool,
    /// The first few paths `git status` lists, to show the user.
    pub dirty_paths: Vec<String>,
}

impl GitState {
    /// Inspects the repository holding `dir`.
    pub fn of(dir: &Path) -> GitState {
        let run = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
        };
        let Some(commit) = run(&["rev-parse", "--verify", "HEAD"]) else {
            return GitState {
                commit: None,
                dirty: true,
                dirty_paths: Vec::new(),
            };
        };
        let status =
            run(&["status", "--porcelain", "--untracked-files=normal"]).unwrap_or_default();
        let dirty_paths: Vec<String> = status
            .lines()
            .take(5)
            .map(|l| l.trim().to_string())
            .collect();
        GitState {
            commit: Some(commit),
            dirty: !status.is_empty(),
            dirty_paths,
        }
    }

    /// The error to show when a dirty tree is refused, with what to do next.
    pub fn refusal(&self, dir: &Path) -> String {
        match &self.commit {
            None => format!(
                "{} is not inside a git repository with a commit, so the jobs could not be reproduced; \
                 commit the runs folder to a repository, or pass --allow-dirty (the jobs are then marked not reproducible)",
                dir.display()
            ),
            Some(_) => format!(
                "the git tree holding {} has uncommitted or untracked files ({}{}); \
                 commit them, add them to .gitignore, or pass --allow-dirty (the jobs are then marked not reproducible)",
                dir.display(),
                self.dirty_paths.join(", "),
                if self.dirty_paths.len() == 5 {
                    ", …"
                } else {
                    ""
                }
            ),
        }
    }
}
