//! One program run under the worker's watch: started without a shell in its own
//! process group, with only the environment it is given; its output read line by
//! line; stopped by signals to the whole group on a timeout, a stop or a lost lease.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::runner::Progress;

/// How long a program has, after SIGTERM, before SIGKILL (on a timeout).
pub const KILL_AFTER: Duration = Duration::from_secs(10);
/// The most of a program's output kept for its log artifact.
pub const LOG_CAP: usize = 1 << 20;
/// A stdout line that starts with this sets the job's progress in `status`.
pub const PROGRESS_PREFIX: &str = "LABELFLEET_PROGRESS ";
/// The longest line of output logged as it is; longer ones are cut.
const LINE_CAP: usize = 4096;
/// Lines of stderr kept for a failure's reason.
const TAIL_LINES: usize = 8;

/// What to run.
pub struct Launch<'a> {
    /// The executable.
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// The whole environment (nothing else of the worker's is inherited).
    pub env: Vec<(String, String)>,
    /// The folder it starts in.
    pub cwd: &'a Path,
    /// How long it may run.
    pub timeout: Option<Duration>,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// The worker is stopping: it was sent SIGTERM and exited with this status (or
    /// was killed: `None`).
    Stopped(Option<i32>),
    /// The job was cancelled (its lease was lost): it was killed.
    Cancelled,
}

/// What the program wrote.
#[derive(Debug, Default)]
pub struct Output {
    /// Its stdout and stderr interleaved as they came, capped at [`LOG_CAP`] (the
    /// latest part kept).
    pub log: String,
    /// The last lines of its stderr.
    pub stderr_tail: Vec<String>,
}

/// Signals for stopping the run.
pub struct Controls<'a> {
    /// The worker is stopping: SIGTERM, then wait (the worker's grace period bounds it).
    pub stop: &'a CancellationToken,
    /// The job must end now: SIGKILL.
    pub cancel: &'a CancellationToken,
    /// Where `LABELFLEET_PROGRESS` lines go.
    pub progress: &'a Progress,
}

/// Runs the program to its end.
pub async fn run(launch: Launch<'_>, controls: Controls<'_>) -> io::Result<(Ended, Output)> {
    let mut command = tokio::process::Command::new(launch.program);
    command
        .args(launch.args)
        .env_clear()
        .envs(launch.env)
        .current_dir(launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure only makes async-signal-safe calls.
    unsafe {
        command.pre_exec(move || {
            // The program dies with the worker (a `kill -9` leaves no orphan). The
            // signal comes when the thread that forked exits: a tokio worker thread,
            // which lives as long as the worker's runtime.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The worker may have died before the line above ran.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let group = child.id().map(|id| id as i32);
    let shared = Arc::new(Mutex::new(Collected::default()));
    let readers = [
        tokio::spawn(read_lines(
            child.stdout.take().expect("piped"),
            Stream::Stdout,
            shared.clone(),
            controls.progress.clone(),
        )),
        tokio::spawn(read_lines(
            child.stderr.take().expect("piped"),
            Stream::Stderr,
            shared.clone(),
            controls.progress.clone(),
        )),
    ];
    let ended = supervise(&mut child, group, launch.timeout, &controls).await?;
    // Whatever the program left running in its group goes with it.
    signal_group(group, libc::SIGKILL);
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let collected = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((ended, collected.into_output()))
}

async fn supervise(
    child: &mut Child,
    group: Option<i32>,
    timeout: Option<Duration>,
    controls: &Controls<'_>,
) -> io::Result<Ended> {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => Ok(ended(status?)),
        _ = deadline => {
            signal_group(group, libc::SIGTERM);
            if tokio::time::timeout(KILL_AFTER, child.wait()).await.is_err() {
                signal_group(group, libc::SIGKILL);
                child.wait().await?;
            }
            Ok(Ended::TimedOut)
        }
        _ = controls.stop.cancelled() => {
            signal_group(group, libc::SIGTERM);
            tokio::select! {
                status = child.wait() => Ok(Ended::Stopped(status?.code())),
                _ = controls.cancel.cancelled() => {
                    signal_group(group, libc::SIGKILL);
                    child.wait().await?;
                    Ok(Ended::Stopped(None))
                }
            }
        }
        _ = controls.cancel.cancelled() => {
            signal_group(group, libc::SIGKILL);
            child.wait().await?;
            Ok(Ended::Cancelled)
        }
    }
}

fn ended(status: std::process::ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Killed(signal),
        (None, None) => Ended::Killed(0),
    }
}

fn signal_group(group: Option<i32>, signal: i32) {
    if let Some(group) = group {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Collected {
    log: VecDeque<String>,
    log_bytes: usize,
    dropped_bytes: usize,
    stderr_tail: VecDeque<String>,
}

impl Collected {
    fn push(&mut self, stream: Stream, line: String) {
        self.log_bytes += line.len() + 1;
        if let Stream::Stderr = stream {
            self.stderr_tail.push_back(line.clone());
            if self.stderr_tail.len() > TAIL_LINES {
                self.stderr_tail.pop_front();
            }
        }
        self.log.push_back(line);
        while self.log_bytes > LOG_CAP {
            let Some(old) = self.log.pop_front() else {
                break;
            };
            self.log_bytes -= old.len() + 1;
            self.dropped_bytes += old.len() + 1;
        }
    }

    fn into_output(self) -> Output {
        let mut log = String::new();
        if self.dropped_bytes > 0 {
            log.push_str(&format!(
                "[labelfleet: the first {} bytes of output are left out]\n",
                self.dropped_bytes
            ));
        }
        for line in self.log {
            log.push_str(&line);
            log.push('\n');
        }
        Output {
            log,
            stderr_tail: self.stderr_tail.into(),
        }
    }
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    which: Stream,
    shared: Arc<Mutex<Collected>>,
    progress: Progress,
) {
    let mut lines = BufReader::new(stream).split(b'\n');
    while let Ok(Some(bytes)) = lines.next_segment().await {
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if line.len() > LINE_CAP {
            let mut end = LINE_CAP;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push('…');
        }
        match which {
            Stream::Stdout => {
                if let Some(text) = line.strip_prefix(PROGRESS_PREFIX) {
                    progress.set(text.trim().to_string());
                }
                tracing::info!(target: "labelfleet::command", stream = "stdout", "{line}");
            }
            Stream::Stderr => {
                tracing::info!(target: "labelfleet::command", stream = "stderr", "{line}")
            }
        }
        shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(which, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(script: &'a [String], dir: &'a Path, timeout: Option<Duration>) -> Launch<'a> {
        Launch {
            program: Path::new("/bin/sh"),
            args: script,
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hello".into()),
            ],
            cwd: dir,
            timeout,
        }
    }

    async fn go(script: &str, timeout: Option<Duration>) -> (Ended, Output, Progress) {
        let dir = tempfile::tempdir().unwrap();
        let args = vec!["-c".to_string(), script.to_string()];
        let (stop, cancel, progress) = (
            CancellationToken::new(),
            CancellationToken::new(),
            Progress::default(),
        );
        let controls = Controls {
            stop: &stop,
            cancel: &cancel,
            progress: &progress,
        };
        let (ended, output) = run(launch(&args, dir.path(), timeout), controls)
            .await
            .unwrap();
        (ended, output, progress)
    }

    #[tokio::test]
    async fn exit_status_output_progress_and_environment_come_back() {
        let (ended, output, progress) = go(
            "echo \"$GREETING $HOME\"; echo 'LABELFLEET_PROGRESS 3/4 done'; echo oops >&2; exit 3",
            None,
        )
        .await;
        assert_eq!(ended, Ended::Exited(3));
        // HOME was not given, so it is empty: nothing of the test's environment leaks.
        assert!(output.log.contains("hello \n"), "{}", output.log);
        assert_eq!(output.stderr_tail, ["oops"]);
        assert_eq!(progress.get().as_deref(), Some("3/4 done"));
    }

    #[tokio::test]
    async fn a_timeout_stops_the_whole_group() {
        let marker = tempfile::tempdir().unwrap();
        let file = marker.path().join("survivor");
        // The program starts a grandchild that would write a file after 2 s.
        let script = format!("(sleep 2; touch {}) & sleep 30", file.display());
        let started = std::time::Instant::now();
        let (ended, _, _) = go(&script, Some(Duration::from_millis(300))).await;
        assert_eq!(ended, Ended::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!file.exists(), "the grandchild outlived the timeout");
    }

    #[tokio::test]
    async fn output_past_the_cap_keeps_its_latest_part() {
        let (ended, output, _) = go(
            "i=0; while [ $i -lt 3000 ]; do printf '%0500d\\n' $i; i=$((i+1)); done; echo last",
            None,
        )
        .await;
        assert_eq!(ended, Ended::Exited(0));
        assert!(output.log.len() <= LOG_CAP + 100);
        assert!(output.log.starts_with("[labelfleet: the first"));
        assert!(output.log.ends_with("last\n"));
    }
}
