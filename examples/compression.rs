//! Compression ratio and CPU of packing 256-byte log lines per codec, through
//! the aggregator delivery uses: `cargo run --release --example compression`.

use std::time::Instant;

use shardline::aggregate::{Aggregator, Codec, Format, Limits, Packs, Pending};
use shardline::record::UserRecord;

fn main() {
    let lines: Vec<Pending> = (0..400_000u64)
        .map(|i| {
            let mut line = format!(
                "203.0.113.{} - - [06/Dec/2026:21:{:02}:{:02} +0000] \"GET /api/v2/items/{} HTTP/1.1\" {} {} \"https://example.com/shop\" \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\" req={:016x}",
                i % 251, (i / 60) % 60, i % 60, i * 7919 % 100_000, [200, 200, 200, 404, 500][i as usize % 5], i * 37 % 50_000, i.wrapping_mul(0x9E3779B97F4A7C15)
            );
            line.truncate(256);
            while line.len() < 256 { line.push(' '); }
            Pending::new(i, 0, UserRecord::new(format!("{:016x}", i % 64), line))
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
