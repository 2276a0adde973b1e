//! The lines of a dead-letter file read back into records: one JSON object per
//! line, with the fields the dead-letter writer (`deliver/dead_letter.rs`) and
//! `shardline spool export` write. Other fields (`code`, `message`, `time`,
//! `entry`, `index`, `spooled_at_ms`) are read past. Owns no state.

use base64::Engine as _;

use crate::record::{parse_explicit_hash_key, UserRecord};

/// A line that reads as a record, bound for `stream`.
#[derive(Debug, Clone)]
pub(super) struct Line {
    /// 1-based, blank lines counted.
    pub(super) no: u64,
    pub(super) stream: String,
    pub(super) record: UserRecord,
}

/// A line's fields as written.
#[derive(serde::Deserialize)]
struct Written {
    stream: String,
    partition_key: String,
    #[serde(default)]
    explicit_hash_key: Option<String>,
    data_base64: String,
}

/// The records of a file's text, and a message for each line that does not
/// read (naming its number). Blank lines are skipped.
pub(super) fn parse(text: &[u8]) -> (Vec<Line>, Vec<String>) {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let no = i as u64 + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(raw) {
            Ok((stream, record)) => lines.push(Line { no, stream, record }),
            Err(why) => problems.push(format!("line {no}: {why}")),
        }
    }
    (lines, problems)
}

fn parse_line(raw: &[u8]) -> Result<(String, UserRecord), String> {
    let w: Written =
        serde_json::from_slice(raw).map_err(|e| format!("not a dead-letter record: {e}"))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(&w.data_base64)
        .map_err(|e| format!("data_base64 is not base64: {e}"))?;
    let explicit_hash_key = match &w.explicit_hash_key {
        Some(k) => Some(parse_explicit_hash_key(k).map_err(|e| e.to_string())?),
        None => None,
    };
    let record = UserRecord {
        partition_key: w.partition_key,
        explicit_hash_key,
        data: data.into(),
    };
    record.validate().map_err(|e| e.to_string())?;
    Ok((w.stream, record))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn every_bad_line_is_named_and_the_good_ones_read() {
        let text = b"{\"stream\":\"a\",\"partition_key\":\"k\",\"explicit_hash_key\":null,\"data_base64\":\"aGk=\",\"code\":\"X\"}\n\
            \n\
            {\"stream\":\"a\"\n\
            {\"stream\":\"b\",\"partition_key\":\"k\",\"explicit_hash_key\":\"7\",\"data_base64\":\"!!\"}\n\
            {\"stream\":\"b\",\"partition_key\":\"\",\"data_base64\":\"\"}\n\
            {\"stream\":\"b\",\"partition_key\":\"q\",\"explicit_hash_key\":\"12\",\"data_base64\":\"\"}";
        let (lines, problems) = parse(text);
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].no, lines[0].stream.as_str()), (1, "a"));
        assert_eq!(&lines[0].record.data[..], b"hi");
        assert_eq!(
            (lines[1].no, lines[1].record.explicit_hash_key),
            (6, Some(12))
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 3: not a dead-letter record"));
        assert!(problems[1].starts_with("line 4: data_base64 is not base64"));
        assert!(problems[2].starts_with("line 5: partition key is empty"));
    }
}
