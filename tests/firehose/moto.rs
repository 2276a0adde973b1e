//! Files to a Firehose delivery stream on moto, read back from the S3 bucket it
//! writes into: moto stores each PutRecordBatch as one object, the records'
//! data concatenated, so the bucket shows every line the agent delivered and
//! which lines travelled in one request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{agent_config, append_lines, duplicates, internal, parse_line, split_lines, LONG};
use crate::util::moto::{Moto, S3Object};
use crate::util::{file_toml, start_agent, Workdir};

const TAGS: [&str; 3] = ["alpha", "beta", "gamma"];
const LINES_PER_FILE: usize = 10_000;

/// Every line in `objects`, in object order.
fn lines_of(objects: &[S3Object]) -> Vec<Bytes> {
    objects.iter().flat_map(|o| split_lines(&o.data)).collect()
}

/// Waits until `bucket` holds at least `n` lines; returns its objects.
async fn wait_lines(moto: &Moto, bucket: &str, n: usize) -> Vec<S3Object> {
    let deadline = Instant::now() + LONG;
    loop {
        let objects = moto.objects(bucket).await;
        let got = lines_of(&objects).len();
        if got >= n {
            return objects;
        }
        assert!(
            Instant::now() < deadline,
            "{bucket}: {got} of {n} lines after {LONG:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Within each object, the lines of each file are in the order of the file.
fn check_file_order_within_objects(objects: &[S3Object]) {
    for o in objects {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for l in o.data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let (tag, n) = parse_line(l).expect("a line the test wrote");
            if let Some(prev) = last.insert(tag, n) {
                assert!(
                    n > prev,
                    "object {}: line {n} of {tag} after line {prev}",
                    o.key
                );
            }
        }
    }
}

/// What the agent says it sent to `name`: (PutRecordBatch calls, Firehose
/// records, lines in them).
fn sent_by_agent(m: &shardline::metrics::Metrics, name: &str) -> (u64, u64, u64) {
    let stream = internal(name);
    let labels = [("stream", stream.as_str())];
    (
        m.read("shardline_put_records_requests_total", &labels),
        m.read("shardline_firehose_records_per_record_count", &labels),
        m.read("shardline_firehose_records_per_record_sum", &labels),
    )
}

/// Three files (half their lines written before the agent starts, half after)
/// to delivery stream `name` on moto with `packing`; checks every line arrived
/// exactly once, in file order within each object, one object per request.
/// Returns the agent's (requests, Firehose records, lines) and the objects.
async fn files_to_moto(name: &str, packing: bool) -> ((u64, u64, u64), Vec<S3Object>) {
    let moto = Moto::start().await;
    let bucket = format!("{name}-bucket");
    moto.create_delivery_stream(&bucket, name).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let half = LINES_PER_FILE / 2;
    let mut sent = Vec::new();
    for tag in TAGS {
        sent.extend(append_lines(&logs.join(format!("{tag}.log")), tag, 0..half));
    }
    // A linger is refused without packing (there is nothing to wait for).
    let linger = if packing {
        "packing_linger_ms = 50\n"
    } else {
        ""
    };
    let kinesis = format!(
        "delivery_stream = \"{name}\"\nendpoint = \"{}\"\npacking = {packing}\n{linger}",
        moto.endpoint
    );
    let rest = file_toml(&[&logs.join("*.log")], "");
    let agent = start_agent(agent_config(&work, &kinesis, &rest)).await;
    for tag in TAGS {
        let path = logs.join(format!("{tag}.log"));
        sent.extend(append_lines(&path, tag, half..LINES_PER_FILE));
    }
    wait_lines(&moto, &bucket, sent.len()).await;
    let m = agent.metrics().clone();
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "the spool is not drained");
    let objects = moto.objects(&bucket).await;
    let dups = duplicates(&sent, &lines_of(&objects));
    assert!(
        dups.is_empty(),
        "{} lines arrived twice with no fault",
        dups.len()
    );
    check_file_order_within_objects(&objects);
    let by_agent = sent_by_agent(&m, name);
    assert_eq!(
        by_agent.0,
        objects.len() as u64,
        "PutRecordBatch calls counted against objects moto wrote (one per call)"
    );
    assert_eq!(by_agent.2, sent.len() as u64, "lines in Firehose records");
    (by_agent, objects)
}

/// Packing on (the default): a Firehose record holds many lines, each ending
/// in "\n", so the 30,000 lines travel in few records and few requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_lines_reach_s3_through_moto_exactly_once_and_in_order() {
    let ((requests, records, lines), objects) = files_to_moto("packed", true).await;
    println!(
        "packing on: {lines} lines in {records} Firehose records, {requests} requests, {} objects",
        objects.len()
    );
    assert!(
        lines >= 10 * records,
        "{lines} lines in {records} records: not packed"
    );
    assert!(
        requests * 500 < lines,
        "{requests} requests for {lines} lines: not packed"
    );
}

/// Packing off: one line per Firehose record (still ending in "\n").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpacked_lines_reach_s3_one_per_record_exactly_once_and_in_order() {
    let ((requests, records, lines), objects) = files_to_moto("single", false).await;
    println!(
        "packing off: {lines} lines in {records} Firehose records, {requests} requests, {} objects",
        objects.len()
    );
    assert_eq!(records, lines, "a Firehose record held more than one line");
    // At most 500 records per PutRecordBatch.
    assert!(
        requests * 500 >= lines,
        "{requests} requests for {lines} single-line records"
    );
}
