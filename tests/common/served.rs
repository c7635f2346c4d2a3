//! The port `labelfleet serve` listens on, read from the line it prints first (`…
//! http://ADDRESS:PORT/ …`). The serve test and the serve bench share it (the bench
//! includes this file by path).

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Reads the first line of `child`'s piped stdout (it must be `serve`'s) and returns
/// the port in the address it printed; panics with that line if it printed none.
pub fn served_port(child: &mut Child) -> u16 {
    let stdout = child.stdout.take().expect("serve's stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .and_then(|a| a.trim_end_matches('/').rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("serve printed no address: {line:?}"))
}
