//! The process's allocator settings (glibc malloc).
//!
//! By default glibc gives every thread that allocates its own arena (up to
//! eight per core) and raises its mmap threshold each time a large block is
//! freed, up to 32 MiB. The agent's large blocks (PutRecords bodies of up to
//! ~1.4 MiB, aggregates, spool reads) then come from the arenas, and freed ones
//! stay in the process as fragmented heap: the resident size drifts above what
//! is live. Two arenas and a fixed 256 KiB threshold (large blocks mapped, and
//! unmapped when freed) keep it near what is live.

/// Applies the settings; call once, before threads start. A no-op where the C
/// library is not glibc.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other
    // threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
