//! What the journald reader holds in memory while the spool is full.

use std::time::Duration;

use crate::util::{full_spool_config, AgentProcess, Workdir};

/// Regression (issue 22, N7): the reader buffered up to 1,024 lines of up to
/// 8 MiB each; 300 entries of 7 MiB with a full spool took 2.1 GiB. Now what
/// it holds is bounded in bytes: a flood of large entries behind a full spool
/// leaves the agent's peak memory far below what the flood would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_entries_behind_a_full_spool_stays_within_a_memory_bound() {
    use std::os::unix::fs::PermissionsExt;
    const ENTRIES: usize = 60;
    let work = Workdir::new();
    let progress = work.path("progress");
    let fake = work.path("journalctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             i=0\n\
             while [ $i -lt {ENTRIES} ]; do\n\
               printf '{{\"__CURSOR\":\"c%d\",\"MESSAGE\":\"' $i\n\
               head -c 7000000 /dev/zero | tr '\\0' m\n\
               printf '\"}}\\n'\n\
               i=$((i+1))\n\
               echo $i > {}\n\
             done\n\
             exec sleep 600\n",
            progress.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Nothing answers at the endpoint: the 2 MiB spool fills and stays full.
    let config = full_spool_config(
        &work,
        &format!(
            "[[journald]]\njournalctl = \"{}\"\nsince = \"beginning\"\n",
            fake.display()
        ),
    );
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    // The reader takes entries until it is held back: the count stops moving.
    let read = || {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let mut last = (read(), std::time::Instant::now());
    while last.0 < ENTRIES && last.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let taken = last.0;
    agent.stop().await;
    assert!(
        taken < ENTRIES,
        "journalctl was never held back: all {taken} entries of 7 MB were read"
    );
    // Buffers of a few entries (reader, channel, batch, spool write): far from
    // the 420 MB the flood would take.
    assert!(
        peak_kib < 200 * 1024,
        "peak RSS {peak_kib} KiB after {taken} entries of 7 MB"
    );
}
