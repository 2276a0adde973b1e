//! The fleet example run small: a few real agents (this build's binary) on one
//! modelled stream with its shard limits, latency and a split and merge under
//! load; nothing may be lost and the report's numbers must be sane. The run's
//! code is the example's own (`examples/fleet/fleet.rs`, included here).

// The example's modules, compiled into this test; what only the example's
// `main` reads (the JSON flag, the table) is unused here.
#[allow(dead_code)]
#[path = "../examples/fleet/fleet.rs"]
mod example;

use clap::Parser as _;

// The example's run reaches the emulator's helpers through its parent.
use crate::util::emulator;
use crate::util::{aws_env, shardline_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_shares_a_resharded_stream_without_losing_a_line() {
    aws_env();
    let work = tempfile::tempdir().unwrap();
    let opts = example::Options::parse_from([
        "fleet",
        "--agents",
        "4",
        "--shards",
        "1",
        "--secs",
        "12",
        "--load",
        "1.5",
        "--progress-secs",
        "0",
        "--drain-secs",
        "60",
    ]);
    let report = example::run(&opts, &shardline_bin(), work.path())
        .await
        .unwrap();
    println!("{}", report.table());
    assert_eq!(report.audit.lost, 0, "lines lost");
    assert!(report.drained, "not every line was accepted in place");
    assert_eq!(report.failed_stops, 0);
    assert!(report.accepted_bytes > 0);
    assert!(report.utilisation > 0.0 && report.utilisation < 1.5);
    assert!(
        report.jain > 0.0 && report.jain <= 1.0,
        "jain {}",
        report.jain
    );
    assert_eq!(report.reshards.len(), 2, "a split and a merge");
    assert!(
        report.list_shards.total >= 4,
        "each agent lists the shards at least once"
    );
    assert_eq!(report.list_shards.per_reshard.len(), 2);
    assert!(report.latency_ms.lines as u64 >= report.audit.written);
    assert!(report.cpu_secs.min > 0.0 && report.peak_rss_mib.min > 0.0);
}
