//! A moto server for tests: the real AWS APIs on 127.0.0.1, from PyPI's `moto[server]`.
//!
//! The server binary is `$LABELFLEET_MOTO_SERVER`, else `.venv/bin/moto_server` in the
//! workspace, else `moto_server` on the PATH. Each [`MotoServer`] runs on a free port and
//! is stopped when dropped — or, for one kept in a static, when the test process exits
//! (it watches its standard input, which closes with the process).
//!
//! Where the server's Python sits beside it (a virtual environment), moto starts through
//! [`FAST_START`], which caches the list of moto's service modules: moto 5.2.5 lists its
//! package folder again for every request, inside a lock that serialises all requests,
//! which cost a third of its time under a busy fleet.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;

/// A running moto server.
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The server's process id (to stop and continue it).
    pub pid: u32,
    child: Child,
    /// Closing it tells the wrapper shell to stop moto.
    stdin: Option<ChildStdin>,
}

/// Starts moto's server with its list of service modules computed once (see the
/// module docs) and its SQS receive made atomic; arguments as for `moto_server`.
///
/// moto 5.2.5's server is threaded, and its `ReceiveMessage` picks visible messages
/// and marks them received with no lock between the two: two receivers at once can
/// both get one message, which real SQS never gives (the conformance case
/// `concurrent_receivers_never_share` saw it about once in five runs on a busy
/// machine). Each pass over the queue now holds a lock; a long poll waits between
/// passes without it, so other receivers are not held up.
pub const FAST_START: &str = r#"import sys, threading, time
import moto.backends as backends
modules = list(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: modules
from moto.sqs.models import SQSBackend
_receive = SQSBackend.receive_message
_receiving = threading.Lock()
def _atomic_receive(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
    end = time.time() + wait_seconds_timeout
    while True:
        with _receiving:
            got = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        if got or time.time() >= end:
            return got
        self.get_queue(queue_name).wait_for_messages(1)
SQSBackend.receive_message = _atomic_receive
from moto.server import main
sys.exit(main(sys.argv[1:]))
"#;

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LABELFLEET_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("moto_server")
    }
}

impl MotoServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = moto_binary();
        let python = binary.with_file_name("python");
        // The shell prints moto's pid, then kills moto once our stdin closes.
        let mut child = Command::new("sh");
        if python.exists() {
            child
                .arg("-c")
                .arg(r#""$0" -c "$2" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & pid=$!; echo $pid; cat >/dev/null; kill $pid 2>/dev/null; kill -CONT $pid 2>/dev/null; wait $pid"#)
                .arg(&python)
                .arg(port.to_string())
                .arg(FAST_START);
        } else {
            child
                .arg("-c")
                .arg(r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & pid=$!; echo $pid; cat >/dev/null; kill $pid 2>/dev/null; kill -CONT $pid 2>/dev/null; wait $pid"#)
                .arg(&binary)
                .arg(port.to_string());
        }
        let mut child = child
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; install it with scripts/test.sh",
                    binary.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line.trim().parse().expect("moto's pid");
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server ({}) did not start on port {port}",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            pid,
            child,
            stdin: Some(stdin),
        }
    }

    /// One server shared by every test of this process.
    pub fn shared() -> &'static MotoServer {
        static SERVER: OnceLock<MotoServer> = OnceLock::new();
        SERVER.get_or_init(MotoServer::start)
    }

    /// Environment variables that point the SDK (and child processes) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// An SDK configuration for this server, with the same timeouts as production.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .load()
            .await
    }

    /// Freezes the server (SIGSTOP): an outage, with its state kept.
    pub fn pause(&self) {
        signal(self.pid, "STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Wake a frozen server, then close the wrapper's stdin: it stops moto and exits.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid.to_string())
            .status();
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Deletes a DynamoDB table: a backend that disappears under a running fleet.
pub async fn delete_table(sdk: &aws_config::SdkConfig, table: &str) {
    aws_sdk_dynamodb::Client::new(sdk)
        .delete_table()
        .table_name(table)
        .send()
        .await
        .unwrap_or_else(|e| panic!("deleting table {table}: {e}"));
}
