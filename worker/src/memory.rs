//! This machine's and this process's memory, as Linux reports it in `/proc`: what sizes
//! the model cache's default bound and what a stopping worker says it held at most.

/// A `Field:  N kB` line of a `/proc` file, in bytes.
fn proc_bytes(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The machine's memory (`MemTotal`), where Linux says.
pub fn total_memory() -> Option<u64> {
    proc_bytes("/proc/meminfo", "MemTotal")
}

/// The most memory this process has held resident (`VmHWM`), where Linux says: what a
/// machine must have for this worker's jobs and the models it kept.
pub fn peak_resident_bytes() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_reports_both_figures() {
        let total = total_memory().unwrap();
        let peak = peak_resident_bytes().unwrap();
        assert!(peak > 0 && peak < total, "peak {peak}, total {total}");
    }
}
