//! Every former spelling loads into the same config as its new spelling, with
//! a hint naming the new one.

use std::path::Path;

use crate::config::parse;

const BASE: &str = r#"
[kinesis]
stream = "logs"
region = "us-east-1"
[spool]
dir = "/var/lib/shardline"
"#;

/// The config of `text` (after `BASE`), its hints taken out, as text.
fn load(text: &str) -> (String, Vec<String>) {
    let mut c = parse(&format!("{BASE}{text}"), Path::new("t.toml")).unwrap();
    let hints = std::mem::take(&mut c.deprecated);
    (format!("{c:?}"), hints)
}

#[test]
fn every_former_spelling_yields_the_new_spellings_config_with_a_hint() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "[[socket]]\npath = \"/run/a.sock\"\nmax_line_bytes = 4096\n",
            "[[socket]]\npath = \"/run/a.sock\"\nmax_record_bytes = 4096\n",
            "socket[0].max_line_bytes is a former spelling (read until 0.4): write max_record_bytes = 4096",
        ),
        (
            "[[file]]\ninclude = [\"/l/*.log\"]\npartition_key = { json_field = \"user\" }\n",
            "[[file]]\ninclude = [\"/l/*.log\"]\npartition_key = { field = \"user\" }\n",
            "file[0].partition_key { json_field = … } is a former spelling (read until 0.4): write partition_key = { field = \"user\" }",
        ),
        (
            "[[file]]\ninclude = [\"/l/*.log\"]\npartition_key = \"random\"\n",
            "[[file]]\ninclude = [\"/l/*.log\"]\npartition_key = \"random_per_batch\"\n",
            "file[0].partition_key = \"random\" draws one key per batch of lines (up to 64 KiB): write \"random_per_batch\" for the same, or \"random_per_record\" for a key per record",
        ),
        (
            "[[journald]]\nformat = \"message\"\n",
            "[[journald]]\nformat = \"raw\"\n",
            "journald[0].format \"message\" is a former spelling (read until 0.4): write format = \"raw\"",
        ),
        (
            "[[journald]]\nformat = \"json\"\nfields = [\"MESSAGE\", \"_PID\"]\n",
            "[[journald]]\nformat = \"json\"\njournal_fields = [\"MESSAGE\", \"_PID\"]\n",
            "journald[0].fields as a list of journal fields is a former spelling (read until 0.4): write journal_fields = [\"MESSAGE\", \"_PID\"]",
        ),
        (
            "[[socket]]\npath = \"/run/a.sock\"\n[delivery]\nlinger_ms = 25\n",
            "[[socket]]\npath = \"/run/a.sock\"\n[delivery]\nmax_buffered_time_ms = 25\n",
            "delivery.linger_ms is a former spelling (read until 0.4): write max_buffered_time_ms = 25",
        ),
        (
            "[[socket]]\npath = \"/run/a.sock\"\n[delivery]\nshard_rate_factor = 0.5\n",
            "[[socket]]\npath = \"/run/a.sock\"\n[delivery]\nrate_limit_percent = 50\n",
            "delivery.shard_rate_factor (a fraction) is a former spelling (read until 0.4): write rate_limit_percent = 50",
        ),
    ];
    for (old, new, hint) in cases {
        let (old_config, hints) = load(old);
        let (new_config, none) = load(new);
        assert_eq!(old_config, new_config, "{old}");
        assert_eq!(hints, [hint]);
        assert!(none.is_empty(), "{new}: {none:?}");
    }
}

#[test]
fn a_former_and_a_new_spelling_together_are_refused() {
    for text in [
        "[[socket]]\npath = \"/a\"\nmax_line_bytes = 1\nmax_record_bytes = 1\n",
        "[[socket]]\npath = \"/a\"\n[delivery]\nshard_rate_factor = 0.5\nrate_limit_percent = 50\n",
        "[[journald]]\nformat = \"json\"\nfields = [\"A\"]\njournal_fields = [\"A\"]\n",
    ] {
        assert!(
            parse(&format!("{BASE}{text}"), Path::new("t.toml")).is_err(),
            "{text}"
        );
    }
}

#[test]
fn the_shared_keys_a_source_cannot_honour_are_named() {
    for (text, says) in [
        (
            "[[socket]]\npath = \"/a\"\noversized = \"split\"\n",
            "socket[0].oversized \"split\" is not supported by a socket",
        ),
        (
            "[[socket]]\npath = \"/a\"\npartition_key = \"line_hash\"\n",
            "socket[0].partition_key: a socket gives each line",
        ),
        (
            "[[journald]]\npartition_key = \"file_path\"\n",
            "journald[0].partition_key \"file_path\" is not",
        ),
        (
            "[[journald]]\nfields = { env = \"prod\" }\n",
            "journald[0].fields adds keys to json records",
        ),
    ] {
        let e = parse(&format!("{BASE}{text}"), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
    let ok = "[[socket]]\npath = \"/a\"\noversized = \"reject\"\npartition_key = \"random_per_record\"\n";
    parse(&format!("{BASE}{ok}"), Path::new("t.toml")).unwrap();
}
