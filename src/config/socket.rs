//! The `[[socket]]` blocks: paths, modes, owners and limits.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::checks::{check_absolute, record_format, JsonKeys};
use super::raw::{Framing, RawSocket, RecordFormat, SocketMode};
use super::SocketConfig;
use super::MAX_LARGE_LINE_BYTES;
use crate::record::RECORD_ID_ROOM;

/// Checks one `[[socket]]` block; `paths` holds the paths of the blocks before it.
pub(super) fn validate_socket(
    i: usize,
    s: &RawSocket,
    default_stream: Option<&String>,
    paths: &mut HashSet<PathBuf>,
    problems: &mut Vec<String>,
) -> Option<SocketConfig> {
    let field = format!("socket[{i}]");
    match &s.path {
        None => problems.push(format!("{field}.path is missing")),
        Some(p) => {
            check_absolute(p, &format!("{field}.path"), problems);
            if !paths.insert(p.clone()) {
                problems.push(format!("{field}.path {p:?} is used by another socket"));
            }
        }
    }
    let (stream, max_line_bytes) = super::streams::target(
        &field,
        [s.stream.as_ref(), s.delivery_stream.as_ref()],
        default_stream,
        (
            "max_record_bytes",
            s.max_record_bytes,
            super::raw::default_max_line_bytes(),
        ),
        problems,
    );
    let streams = allowed_streams(&field, s, problems);
    socket_vocabulary(&field, s, problems);
    let file_mode = parse_mode(&s.file_mode);
    if file_mode.is_none() {
        problems.push(format!(
            "{field}.file_mode {:?} is not an octal permission such as \"0660\"",
            s.file_mode
        ));
    }
    let owner = s.owner.as_deref().and_then(|o| {
        lookup_id("/etc/passwd", o)
            .map_err(|e| problems.push(format!("{field}.owner {o:?}: {e}")))
            .ok()
    });
    let group = s.group.as_deref().and_then(|g| {
        lookup_id("/etc/group", g)
            .map_err(|e| problems.push(format!("{field}.group {g:?}: {e}")))
            .ok()
    });
    check_socket_limits(&field, s, problems);
    let format = socket_format(&field, s, problems);
    Some(SocketConfig {
        block: field,
        path: s.path.clone()?,
        mode: s.mode,
        framing: s.framing,
        stream: stream?,
        streams,
        max_line_bytes: if format == RecordFormat::Raw
            && s.record_id
            && s.framing != Framing::Frames
        {
            max_line_bytes.saturating_sub(RECORD_ID_ROOM).max(1)
        } else {
            max_line_bytes
        },
        file_mode: file_mode?,
        owner,
        group,
        allow_uids: s.allow_uids.clone(),
        allow_gids: s.allow_gids.clone(),
        max_connections: s.max_connections,
        max_connections_per_uid: s.max_connections_per_uid,
        idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        on_full: s.on_full,
        format,
        record_id: s.record_id,
    })
}

/// The further streams a framed client may name, as written (their keys are
/// set with every other stream's, and the socket's own is added then).
fn allowed_streams(
    field: &str,
    s: &RawSocket,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    if !s.streams.is_empty() && s.framing != Framing::Frames {
        problems.push(format!(
            "{field}.streams needs framing = \"frames\" (only a framed request can name its stream)"
        ));
    }
    for (i, name) in s.streams.iter().enumerate() {
        if name.is_empty() {
            problems.push(format!("{field}.streams[{i}] is empty"));
        } else {
            super::arn::check(name, &format!("{field}.streams[{i}]"), problems);
        }
    }
    s.streams.iter().map(|n| (n.clone(), n.clone())).collect()
}

/// A socket's mode against its framing and peer checks, and its limits.
fn check_socket_limits(field: &str, s: &RawSocket, problems: &mut Vec<String>) {
    if s.max_record_bytes == 0 || s.max_record_bytes > MAX_LARGE_LINE_BYTES {
        problems.push(format!(
            "{field}.max_record_bytes {} is outside 1..={MAX_LARGE_LINE_BYTES} (the largest Kinesis record, 10 MiB, less a 16-character partition key)",
            s.max_record_bytes,
        ));
    }
    if s.mode == SocketMode::Datagram {
        if s.framing == Framing::Frames {
            problems.push(format!(
                "{field}: framing = \"frames\" needs mode = \"stream\""
            ));
        }
        if !s.allow_uids.is_empty() || !s.allow_gids.is_empty() {
            problems.push(format!(
                "{field}: allow_uids/allow_gids need mode = \"stream\" (a datagram has no peer credentials)"
            ));
        }
    }
    if s.max_connections == 0 {
        problems.push(format!("{field}.max_connections must be at least 1"));
    }
    if s.max_connections_per_uid == 0 {
        problems.push(format!(
            "{field}.max_connections_per_uid must be at least 1"
        ));
    }
    if s.idle_timeout_secs == 0 {
        problems.push(format!("{field}.idle_timeout_secs must be at least 1"));
    }
}

/// Resolves a user or group (name or number) with the system's database file.
/// A socket's record format, checked against its framing.
fn socket_format(field: &str, s: &RawSocket, problems: &mut Vec<String>) -> RecordFormat {
    let format = record_format(
        field,
        JsonKeys {
            format: s.format,
            fields: &s.fields,
            merge: s.json_merge,
            ec2_identity: s.ec2_identity,
            rename: &s.rename,
            timestamp_format: s.timestamp_format.as_deref(),
            parse: s.parse.as_ref(),
            file: false,
            record_id: s.record_id,
            record_id_key: &s.record_id_key,
        },
        problems,
    );
    if format != RecordFormat::Raw && s.framing == Framing::Frames {
        problems.push(format!(
            "{field}: format = \"json\" needs framing = \"lines\" (frames carry their own records)"
        ));
    }
    format
}

pub(super) fn lookup_id(db: &str, name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(db).map_err(|e| format!("cannot read {db}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(id)
        })
        .next()
        .ok_or_else(|| format!("no such entry in {db}"))
}

/// A permission written in octal: 3 or 4 digits 0-7 (`"0660"`, `"640"`), nothing
/// else (`u32::from_str_radix` alone would take `"+777"`).
pub(super) fn parse_mode(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix('0')
        .filter(|d| d.len() == 3)
        .unwrap_or(text);
    if digits.len() != 3 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// The keys every source block has, as far as a socket can honour them: a
/// longer record is refused, never cut; each line or datagram gets a random
/// key (a framed client sends its own).
fn socket_vocabulary(field: &str, s: &super::raw::RawSocket, problems: &mut Vec<String>) {
    use super::raw::{KeyName, RawPartitionKey};
    if let Some(o) = s.oversized.as_deref().filter(|o| *o != "reject") {
        problems.push(format!(
            "{field}.oversized {o:?} is not supported by a socket: a longer line or datagram is refused and the client told (\"reject\", the default)"
        ));
    }
    match &s.partition_key {
        None | Some(RawPartitionKey::Named(KeyName::Random | KeyName::RandomPerRecord)) => {}
        Some(_) => problems.push(format!(
            "{field}.partition_key: a socket gives each line or datagram a random key (\"random\" or \"random_per_record\"); a framed client sends its own"
        )),
    }
}
