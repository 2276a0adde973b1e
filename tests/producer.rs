//! The embeddable `Producer`: typed errors, delivery receipts, the failure stream,
//! and the drain at shutdown, against the emulator.

use std::time::Duration;

use bytes::Bytes;
use shardline::producer::{Producer, ProducerOptions};
use shardline::record::{RecordError, UserRecord, MAX_LARGE_RECORD_BYTES, MAX_RECORD_BYTES};
use shardline::DeliveryError;
use shardline::ProduceError;

use crate::util::{
    aws_env, check_shards_and_collect, config, create_stream, read_stream, socket_toml, Emulator,
    ReadRecord, Workdir,
};

fn options(work: &Workdir, endpoint: &str, extra: &str) -> ProducerOptions {
    let c = config(
        work,
        endpoint,
        "logs",
        &format!("{}{extra}", socket_toml(&work.path("unused.sock"), None)),
    );
    ProducerOptions::from_config(&c)
}

fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_and_puts_after_shutdown_get_typed_errors() {
    aws_env();
    let work = Workdir::new();
    let producer = Producer::start(options(&work, &dead_endpoint(), ""))
        .await
        .unwrap();
    let err = |r: Result<_, ProduceError>| r.map(|_| ()).unwrap_err();
    let e = err(producer.put(UserRecord::new("", "x")).await);
    assert!(
        matches!(
            e,
            ProduceError::InvalidRecord {
                index: 0,
                source: RecordError::EmptyPartitionKey
            }
        ),
        "{e:?}"
    );
    let e = err(producer
        .put_batch(vec![
            UserRecord::new("ok", "x"),
            UserRecord::new("k".repeat(300), "x"),
        ])
        .await);
    assert!(
        matches!(
            e,
            ProduceError::InvalidRecord {
                index: 1,
                source: RecordError::PartitionKeyTooLong { chars: 300 }
            }
        ),
        "{e:?}"
    );
    let e = err(producer
        .put(UserRecord::new("k", vec![0u8; MAX_LARGE_RECORD_BYTES]))
        .await);
    assert!(
        matches!(e, ProduceError::InvalidRecord { source: RecordError::TooLarge { bytes }, .. } if bytes == MAX_LARGE_RECORD_BYTES + 1),
        "{e:?}"
    );
    let e = err(producer
        .put_batch_to("nope", vec![UserRecord::new("k", "x")])
        .await);
    assert!(
        matches!(e, ProduceError::UnknownStream(ref s) if s == "nope"),
        "{e:?}"
    );

    // Kinesis is unreachable: records wait, and shutdown says how many stayed.
    let receipt = producer
        .put_batch(
            (0..100)
                .map(|i| UserRecord::new(format!("k{i}"), "waiting"))
                .collect(),
        )
        .await
        .unwrap();
    let report = producer.shutdown().await.unwrap();
    assert_eq!(report.undelivered_records, 100);
    assert!(report.spooled_bytes > 0);
    assert_eq!(receipt.delivered().await, Err(DeliveryError::NotDelivered));
    let e = err(producer.put(UserRecord::new("k", "late")).await);
    assert!(matches!(e, ProduceError::Stopped), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_is_refused_by_try_put() {
    aws_env();
    let work = Workdir::new();
    let producer = Producer::start(options(&work, &dead_endpoint(), ""))
        .await
        .unwrap();
    // Shrink the spool by filling it: 2 MiB is the smallest allowed, so write
    // until refused.
    let big = Bytes::from(vec![b'x'; 512 * 1024]);
    let mut options = options(&work, &dead_endpoint(), "");
    producer.shutdown().await.unwrap();
    drop(producer); // releases the spool directory
    options.spool.max_bytes = 2 * MAX_RECORD_BYTES as u64;
    let producer = Producer::start(options).await.unwrap();
    let mut refused = None;
    for i in 0..16 {
        match producer.try_put_batch_to("logs", vec![UserRecord::new(format!("k{i}"), big.clone())])
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a 2 MiB spool took 8 MiB");
    assert!(matches!(e, ProduceError::SpoolFull(_)), "{e:?}");
    assert!(e.to_string().contains("spool is full"));
    producer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_waited_for_a_full_spool_keeps_its_receipt() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    let work = Workdir::new();
    // The stream does not exist yet: the spool fills and stays full.
    let mut options = options(&work, &emu.endpoint, "");
    options.spool.max_bytes = 2 * MAX_RECORD_BYTES as u64;
    let producer = Producer::start(options).await.unwrap();
    let big = Bytes::from(vec![b'x'; 512 * 1024]);
    let mut receipts = Vec::new();
    for i in 0.. {
        match producer.try_put_batch_to("logs", vec![UserRecord::new(format!("k{i}"), big.clone())])
        {
            Ok(r) => receipts.push(r),
            Err(ProduceError::SpoolFull(_)) => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(i < 16, "a 2 MiB spool took 8 MiB");
    }
    let waiting = tokio::spawn({
        let producer = producer.clone();
        let big = big.clone();
        async move {
            producer
                .put_batch(vec![UserRecord::new("waited", big)])
                .await
                .unwrap()
                .delivered()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the put waits while the spool is full"
    );
    create_stream(&client, "logs", 1).await;
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiting put gets in and is delivered")
        .unwrap()
        .expect("its receipt says delivered");
    for r in receipts {
        r.delivered().await.unwrap();
    }
    producer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_resolve_only_after_kinesis_accepted_the_records() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    let work = Workdir::new();
    // The stream does not exist yet: nothing can be accepted.
    let producer = Producer::start(options(&work, &emu.endpoint, ""))
        .await
        .unwrap();
    let records: Vec<UserRecord> = (0..20)
        .map(|i| UserRecord::new(format!("pk-{i}"), format!("receipt-{i}")))
        .collect();
    let mut pending = Box::pin(producer.put_batch(records).await.unwrap().delivered());
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut pending)
            .await
            .is_err(),
        "receipt resolved while the stream did not exist"
    );
    assert!(read_stream_if_exists(&client).await.is_empty());
    create_stream(&client, "logs", 2).await;
    tokio::time::timeout(Duration::from_secs(60), &mut pending)
        .await
        .expect("receipt resolves once the stream exists")
        .unwrap();
    // Resolved means accepted: all 20 are readable now.
    let (_, data) = check_shards_and_collect(&client, "logs").await;
    assert_eq!(data.len(), 20);
    // Receipts of single puts too, with an explicit hash key.
    let mut r = UserRecord::new("any", "explicit");
    r.explicit_hash_key = Some(u128::MAX);
    producer.put(r).await.unwrap().delivered().await.unwrap();
    let (_, data) = check_shards_and_collect(&client, "logs").await;
    assert!(data.iter().any(|d| d.as_ref() == b"explicit"));
    producer.shutdown().await.unwrap();
}

async fn read_stream_if_exists(client: &aws_sdk_kinesis::Client) -> Vec<ReadRecord> {
    match client
        .describe_stream_summary()
        .stream_name("logs")
        .send()
        .await
    {
        Ok(_) => read_stream(client, "logs").await,
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_good_goes_to_the_failure_stream_and_dead_letter_file() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    *emu.faults.poison.lock().unwrap() = Some(b"POISON".to_vec());
    let work = Workdir::new();
    let producer = Producer::start(options(&work, &emu.endpoint, ""))
        .await
        .unwrap();
    let mut failures = producer.failures().expect("failure stream");
    assert!(producer.failures().is_none(), "taken once");
    let mut records: Vec<UserRecord> = (0..50)
        .map(|i| UserRecord::new(format!("pk-{i}"), format!("good-{i}")))
        .collect();
    records[17] = UserRecord::new("bad-key", "this is POISON");
    let receipt = producer.put_batch(records).await.unwrap();
    let clean = producer
        .put_batch(vec![UserRecord::new("x", "clean batch")])
        .await
        .unwrap();
    let failure = tokio::time::timeout(Duration::from_secs(60), failures.recv())
        .await
        .expect("a failure is reported")
        .unwrap();
    assert_eq!(failure.code, "ValidationException");
    assert_eq!(failure.stream, "logs");
    assert_eq!(
        failure.records,
        vec![UserRecord::new("bad-key", "this is POISON")]
    );
    let result = tokio::time::timeout(Duration::from_secs(60), receipt.delivered())
        .await
        .unwrap();
    assert!(
        matches!(result, Err(DeliveryError::Rejected { ref code, .. }) if code == "ValidationException"),
        "{result:?}"
    );
    clean.delivered().await.unwrap();
    // Everything else arrived; the refused record is in the dead-letter file.
    let (_, data) = check_shards_and_collect(&client, "logs").await;
    assert_eq!(data.len(), 50);
    assert!(!data.iter().any(|d| d.as_ref() == b"this is POISON"));
    let dead = std::fs::read_to_string(work.spool().join("dead-letter.ndjson")).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{dead}");
    assert_eq!(lines[0]["partition_key"], "bad-key");
    assert_eq!(lines[0]["code"], "ValidationException");
    assert_eq!(
        producer
            .metrics()
            .read("shardline_records_failed_total", &[("stream", "logs")]),
        1
    );
    let report = producer.shutdown().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "refused record left in the spool");
}

/// With `max_record_age_secs` set, records that cannot be delivered in time go to
/// the dead-letter file with a clear reason instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_max_age_go_to_the_dead_letter_file() {
    aws_env();
    let work = Workdir::new();
    let mut o = options(&work, &dead_endpoint(), "");
    o.delivery.max_record_age = Some(Duration::from_secs(1));
    let producer = Producer::start(o).await.unwrap();
    let mut failures = producer.failures().unwrap();
    let receipt = producer
        .put_batch(
            (0..10)
                .map(|i| UserRecord::new(format!("k{i}"), format!("old-{i}")))
                .collect(),
        )
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), receipt.delivered())
        .await
        .expect("expired records are given up");
    assert!(
        matches!(result, Err(DeliveryError::Rejected { ref code, .. }) if code == "Expired"),
        "{result:?}"
    );
    let failure = failures.recv().await.unwrap();
    assert_eq!(failure.records.len(), 10);
    let dead = std::fs::read_to_string(work.spool().join("dead-letter.ndjson")).unwrap();
    assert_eq!(dead.lines().count(), 10);
    assert!(dead.contains("max_record_age_secs"), "{dead}");
    let report = producer.shutdown().await.unwrap();
    assert_eq!(report.undelivered_records, 0);
    assert_eq!(report.spooled_bytes, 0);
}
