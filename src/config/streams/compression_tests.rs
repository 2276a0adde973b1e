//! Tests of the compression keys per Kinesis stream and of the record id keys
//! of the sources: what a valid file gives, and a message for every mistake.

use crate::aggregate::{Codec, Packs};
use crate::config::streams::tests::{check, problems};
use crate::config::*;

const BASE: &str = "[kinesis]\nregion = \"eu-west-1\"\nstream = \"logs\"\n[spool]\ndir = \"/tmp/x\"\n\
                    [[socket]]\npath = \"/tmp/a.sock\"\n[[socket]]\npath = \"/tmp/b.sock\"\nstream = \"other\"\n";

#[test]
fn compression_is_set_in_delivery_and_per_stream() {
    let c = check(&format!(
        "{BASE}[delivery]\ncompression = \"gzip\"\n\
         [[destination]]\nstream = \"other\"\ncompression = \"zstd\"\ncompression_pack_bytes = 65536\n"
    ))
    .unwrap();
    let d = &c.delivery;
    assert_eq!(
        d.packs("logs"),
        Some(Packs {
            codec: Codec::Gzip(6),
            max_bytes: 0
        })
    );
    assert_eq!(
        d.packs("other"),
        Some(Packs {
            codec: Codec::Zstd(3),
            max_bytes: 65536
        })
    );
    let c = check(&format!(
        "{BASE}[delivery]\ncompression = \"zstd\"\n[[destination]]\nstream = \"other\"\ncompression = \"none\"\n"
    ))
    .unwrap();
    assert_eq!(c.delivery.packs("other"), None);
    assert_eq!(check(BASE).unwrap().delivery.packs("logs"), None);
}

#[test]
fn every_compression_mistake_is_named() {
    for (keys, want) in [
        ("compression = \"lz4\"", "compression \"lz4\" is not"),
        (
            "compression = \"gzip\"\ncompression_level = 10",
            "compression_level 10 is outside 0..=9",
        ),
        (
            "compression = \"zstd\"\ncompression_level = 0",
            "compression_level 0 is outside 1..=22",
        ),
        (
            "compression = \"none\"\ncompression_level = 3",
            "compression_level needs compression = \"gzip\"",
        ),
        (
            "compression = \"zstd\"\ncompression_pack_bytes = 2000000",
            "compression_pack_bytes 2000000 is above",
        ),
    ] {
        let p = problems(&format!("{BASE}[delivery]\n{keys}\n"));
        assert!(p.contains(want), "{keys}: {p}");
    }
    let p = problems(&format!(
        "{BASE}[[destination]]\nstream = \"other\"\ncompression_level = 3\n"
    ));
    assert!(
        p.contains("destination[0].compression_level needs compression in the same section"),
        "{p}"
    );
    let p = problems(
        "[kinesis]\nregion = \"eu-west-1\"\ndelivery_stream = \"fh\"\ncompression = \"gzip\"\n\
         [spool]\ndir = \"/tmp/x\"\n[[socket]]\npath = \"/tmp/a.sock\"\n",
    );
    assert!(
        p.contains("kinesis.compression is for a Kinesis stream"),
        "{p}"
    );
}

#[test]
fn record_id_keys_are_checked_and_raw_lines_keep_room_for_the_id() {
    let c = check(&format!(
        "{BASE}[[file]]\ninclude = [\"/var/log/*.log\"]\nrecord_id = true\nmax_record_bytes = 4096\n\
         [[file]]\ninclude = [\"/srv/*.log\"]\nformat = \"json\"\nrecord_id = true\nrecord_id_key = \"id\"\n"
    ))
    .unwrap();
    assert!(c.files[0].record_id);
    assert_eq!(
        c.files[0].max_record_bytes,
        4096 - crate::record::RECORD_ID_ROOM
    );
    match &c.files[1].format {
        RecordFormat::Json(j) => assert_eq!(j.id_key.as_deref(), Some("id")),
        other => panic!("{other:?}"),
    }
    for (key, want) in [("\"\"", "record_id_key is empty"), ("\"host\"", "collides")] {
        let p = problems(&format!(
            "{BASE}[[file]]\ninclude = [\"/var/log/*.log\"]\nformat = \"json\"\nrecord_id = true\nrecord_id_key = {key}\n"
        ));
        assert!(p.contains(want), "{key}: {p}");
    }
    let p = problems(&format!(
        "{BASE}[[journald]]\nrecord_id = true\nrecord_id_key = \"\"\n"
    ));
    assert!(p.contains("journald[0].record_id_key is empty"), "{p}");
}
