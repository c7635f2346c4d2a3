//! The flags that say which programs `command` jobs may run here (`worker` and `run`
//! take them).

use std::path::PathBuf;

use labelfleet_worker::runners::command::AllowList;

use super::Exit;

/// Which programs `command` jobs may run, and what of this environment they see.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Command jobs")]
pub struct AllowedCommands {
    /// Let `command` jobs run this program: NAME=PATH, the absolute path of an
    /// executable (repeatable). A job names the program, never a path: with none
    /// allowed, `command` jobs are dead-lettered.
    #[arg(long = "allow-command", value_name = "NAME=PATH")]
    pub allow_command: Vec<String>,
    /// A file of NAME=PATH lines, as `--allow-command` (`#` starts a comment line).
    #[arg(long, value_name = "FILE")]
    pub commands: Option<PathBuf>,
    /// Let programs see this variable of this environment (repeatable). Otherwise
    /// they get only PATH, HOME, USER, LANG, LC_ALL, TZ and CUDA_VISIBLE_DEVICES of it
    /// (no credentials), besides the job's own LABELFLEET_* variables.
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
}

impl AllowedCommands {
    /// The allow-list, checked: every path an executable file.
    pub fn allow_list(&self) -> Result<AllowList, Exit> {
        let config = |flag: &str, e: String| Exit::new(Exit::CONFIG, format!("{flag}: {e}"));
        let mut list = AllowList::default();
        for entry in &self.allow_command {
            list.allow(entry)
                .map_err(|e| config("--allow-command", e))?;
        }
        if let Some(file) = &self.commands {
            list.allow_file(file).map_err(|e| config("--commands", e))?;
        }
        for name in &self.pass_env {
            list.pass_env(name).map_err(|e| config("--pass-env", e))?;
        }
        Ok(list)
    }
}
