//! Compression with the real binary: records read back from the emulator,
//! deaggregated by the npm aws-kinesis-agg package, then decompressed by
//! Python's `gzip` and the `zstandard` package, are the lines that were sent,
//! packed or one per user record.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::moto::venv_bin;
use crate::util::{
    create_stream, node_deaggregate, read_stream, send_lines, socket_toml, write_binary_config,
    AgentProcess, Emulator,
};

const LINES: usize = 2000;

/// Decompresses each user record with Python's standard `gzip` or the
/// `zstandard` package (by its magic) and splits it at its newlines.
fn python_lines(records: &[bytes::Bytes]) -> Vec<String> {
    let script = r#"
import base64, gzip, sys, zstandard
for line in sys.stdin:
    data = base64.b64decode(line)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    else:
        sys.exit("neither gzip nor zstd: %r" % data[:8])
    for l in data.split(b"\n"):
        print(l.decode())
"#;
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for r in records {
        input.push_str(&base64::engine::general_purpose::STANDARD.encode(r));
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_records_read_back_as_the_lines_sent() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    // (stream, its destination block, what its first user record starts with)
    let streams = [
        ("gz", "compression = \"gzip\"\n", vec![0x1f, 0x8b]),
        (
            "zs",
            "compression = \"zstd\"\ncompression_level = 9\ncompression_pack_bytes = 65536\n",
            vec![0x28, 0xb5, 0x2f, 0xfd],
        ),
        (
            "gzpack",
            "compression = \"gzip\"\ncompression_pack_bytes = 8192\naggregate = false\n",
            vec![0x1f, 0x8b],
        ),
    ];
    let work = crate::util::Workdir::new();
    let path = write_binary_config(&work, &emu.endpoint, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (name, block, _) in &streams {
        create_stream(&client, name, 2).await;
        text.push_str(&socket_toml(
            &work.path(&format!("{name}.sock")),
            Some(name),
        ));
        text.push_str(&format!("[[destination]]\nstream = \"{name}\"\n{block}"));
    }
    create_stream(&client, "logs", 1).await;
    std::fs::write(&path, text).unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &path, &[], |_| {});
    agent.metrics_addr().await;
    for (name, _, magic) in &streams {
        let sent: Vec<String> = (0..LINES)
            .map(|i| {
                format!(
                    "{name} 2026-12-06T21:00:{:02}Z GET /api/items/{i} 200",
                    i % 60
                )
            })
            .collect();
        send_lines(&work.path(&format!("{name}.sock")), sent.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = loop {
            let records = read_stream(&client, name).await;
            let input: Vec<_> = records
                .iter()
                .map(|r| {
                    (
                        r.partition_key.clone(),
                        r.explicit_hash_key.clone(),
                        r.data.clone(),
                    )
                })
                .collect();
            let users: Vec<bytes::Bytes> = node_deaggregate(&input)
                .into_iter()
                .flatten()
                .map(|u| u.data)
                .collect();
            assert!(users.iter().all(|u| u.starts_with(magic)), "{name}");
            let got = python_lines(&users);
            if got.len() >= LINES {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} lines\n{}",
                got.len(),
                agent.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (mut want, _) = (sent, got.sort());
        want.sort();
        assert_eq!(got, want, "{name}");
    }
    agent.stop().await;
}
