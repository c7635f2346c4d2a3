//! How the process's allocator hands memory back to the system.
//!
//! A training step allocates and frees gigabytes of activations and gradients, in
//! buffers of a few megabytes. glibc serves such buffers with `mmap` and unmaps them on
//! free (its threshold adapts, but from 128 KiB), and trims the heap's free top back to
//! the system: every step then faults its memory in afresh, the kernel zeroing each
//! page and shooting down other threads' TLBs on every unmap. Measured on a LoRA step
//! of SmolLM2-135M (2 cores): 7.2 M page faults and 36 s of system time in 76 s; with
//! freed memory kept, 0.7 M and 5 s, and the backward pass 6.9 s → 3.6 s a step.

/// Keeps freed memory in the process for reuse: buffers up to 32 MiB (glibc's largest
/// threshold) come from the heap, and the heap is not trimmed. The resident size then
/// stays at its peak rather than falling between steps. Settings the user made with
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` are kept. Does nothing on
/// other C libraries.
///
/// # Safety
///
/// It changes the allocator's settings, which glibc documents as for a process with
/// one thread: call it first thing in `main`.
pub unsafe fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        if !set("MALLOC_MMAP_THRESHOLD_") {
            // SAFETY: the caller guarantees the process has a single thread.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) };
        }
        if !set("MALLOC_TRIM_THRESHOLD_") {
            // SAFETY: as above. The largest value glibc takes: never trim.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) };
        }
    }
}
