//! Compression ratio and CPU of packing 256-byte log lines per codec, through
//! the aggregator delivery uses: `cargo run --release --example compression`.
//! The lines are the end-to-end benchmark's Apache combined lines
//! (`E2E_LINES=apache`): addresses, paths, sizes, referers and agents varied
//! per line.

use std::time::Instant;

#[allow(dead_code)]
#[path = "e2e/lines.rs"]
mod lines;

use shardline::aggregate::{Aggregator, Codec, Format, Limits, Packs, Pending};
use shardline::record::UserRecord;

fn main() {
    // SAFETY: set before any other thread starts.
    unsafe { std::env::set_var("E2E_LINES", "apache") };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    lines::write_lines(&path, 400_000, 256);
    let text = std::fs::read(&path).unwrap();
    let lines: Vec<Pending> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            let key = format!("{:016x}", i % 64);
            Pending::new(i as u64, 0, UserRecord::new(key, l.to_vec()))
        })
        .collect();
    let raw: usize = lines.iter().map(|p| p.record.data.len()).sum();
    for codec in [Codec::None, Codec::Gzip(6), Codec::Zstd(1), Codec::Zstd(3)] {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_records: usize::MAX,
            format: Format::Kpl,
            packs: (codec != Codec::None).then_some(Packs {
                codec,
                max_bytes: 64 * 1024,
            }),
        };
        let start = Instant::now();
        let mut agg = Aggregator::new();
        let mut sent = 0;
        for p in lines.iter().cloned() {
            if let Err(p) = agg.try_add(p, &limits) {
                sent += agg.take().encode().size();
                agg.try_add(p, &limits).unwrap();
            }
        }
        sent += agg.take().encode().size();
        let secs = start.elapsed().as_secs_f64();
        let gib = raw as f64 / (1u64 << 30) as f64;
        println!(
            "{:>5} {:?}: ratio {:.2}x, {:.2} CPU-s per GiB of lines",
            codec.name(),
            codec,
            raw as f64 / sent as f64,
            secs / gib
        );
    }
}
