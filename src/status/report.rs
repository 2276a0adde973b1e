//! What `GET /status` answers, and how `shardline status` shows it.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::metrics::{DestinationHealth, LastError, Trouble};

/// What `GET /status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The agent's version.
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub spool: SpoolStatus,
    /// User records accepted by Kinesis since the agent started, all streams.
    pub delivered_records_total: u64,
    /// User records accepted per second over the last minute, all streams.
    pub delivery_rate_records_per_second: f64,
    pub streams: Vec<StreamStatus>,
    /// The most recent delivery problem, if there was one since the start.
    pub last_error: Option<ErrorStatus>,
    /// Each source and whether it runs.
    #[serde(default)]
    pub sources: Vec<SourceStatus>,
}

/// A source (`[[socket]]`, `[[file]]`, `[[journald]]`) and whether it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// `socket`, `file` or `journald`.
    pub kind: String,
    /// The socket's path, the file block's patterns, the journald block's name.
    pub name: String,
    /// What keeps it from running, if anything (`None`: running).
    pub problem: Option<String>,
    /// How long the problem has held it.
    pub problem_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// User records waiting for Kinesis.
    pub records: u64,
    /// Bytes they take in the spool.
    pub bytes: u64,
    /// `spool.max_bytes`: sources wait once `bytes` reaches it.
    pub max_bytes: u64,
    /// How long the oldest waiting record has waited (to within a second); `None`
    /// when nothing waits, or for a memory-only spool.
    pub oldest_record_age_seconds: Option<f64>,
    /// Bytes of the spool's segment files (what counts against `max_bytes`).
    #[serde(default)]
    pub segment_bytes: u64,
    /// Free bytes of the spool's filesystem (`None` for a memory-only spool).
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// `spool.min_free_bytes`: below it the spool is full.
    #[serde(default)]
    pub min_free_bytes: u64,
    /// Damaged spool frames or files found since the start (their records are lost).
    #[serde(default)]
    pub damaged_frames: u64,
    /// Writers are refused room now: `"spool_full"` (max_bytes reached) or
    /// `"disk_full"` (no room above min_free_bytes for the next write).
    #[serde(default)]
    pub refusing: Option<String>,
    /// The spool's damage report, kept across restarts until an operator
    /// deletes it (`None`: there is none).
    #[serde(default)]
    pub damage: Option<DamageStatus>,
}

/// What the spool's damage report (`damaged/report`) lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageStatus {
    /// The report file; deleting it clears the report.
    pub path: String,
    /// Damage events listed.
    pub events: u64,
    /// Records they lost, as far as known.
    pub lost_records: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub stream: String,
    pub delivered_records_total: u64,
    pub delivery_rate_records_per_second: f64,
    /// Where the stream's records go: region, endpoint, profile, role.
    #[serde(default)]
    pub destination: String,
    #[serde(default)]
    pub state: DestinationState,
    /// The problem behind a state other than `ok` and `idle`.
    #[serde(default)]
    pub error: Option<ErrorStatus>,
}

/// A destination's state, from delivery's last answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    /// Kinesis accepted the last request.
    Ok,
    /// No request answered yet.
    #[default]
    Idle,
    /// Kinesis refused records for the shards' limits.
    Throttled,
    /// No usable credentials, or the role cannot be assumed.
    CredentialsFailing,
    /// The stream does not exist.
    StreamMissing,
    /// Server errors, transport failures, timeouts.
    Failing,
}

impl DestinationState {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationState::Ok => "ok",
            DestinationState::Idle => "idle",
            DestinationState::Throttled => "THROTTLED",
            DestinationState::CredentialsFailing => "CREDENTIALS FAILING",
            DestinationState::StreamMissing => "STREAM MISSING",
            DestinationState::Failing => "FAILING",
        }
    }

    pub(super) fn of(health: &DestinationHealth) -> DestinationState {
        match health.trouble().map(|e| e.trouble) {
            Some(Trouble::Throttled) => DestinationState::Throttled,
            Some(Trouble::Credentials) => DestinationState::CredentialsFailing,
            Some(Trouble::StreamMissing) => DestinationState::StreamMissing,
            Some(Trouble::Failing) => DestinationState::Failing,
            None if health.last_ok.is_some() => DestinationState::Ok,
            None => DestinationState::Idle,
        }
    }
}

impl ErrorStatus {
    pub(super) fn of(e: &LastError) -> ErrorStatus {
        ErrorStatus {
            stream: e.stream.clone(),
            code: e.code.clone(),
            message: e.message.clone(),
            age_seconds: SystemTime::now()
                .duration_since(e.at)
                .unwrap_or_default()
                .as_secs_f64(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorStatus {
    pub stream: String,
    /// Kinesis's error code, or `Transport` / `Timeout` for a request that got no
    /// answer.
    pub code: String,
    pub message: String,
    pub age_seconds: f64,
}

/// `1.5 KiB`, `3.0 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `42s`, `3m 05s`, `2h 10m`, `3d 4h`.
fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

impl Status {
    /// The status as `shardline status` prints it for a person.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.spool;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "shardline {}, pid {}, up {}",
            self.version,
            self.pid,
            human_duration(self.uptime_seconds)
        );
        self.render_spool(&mut out);
        let oldest = match (s.oldest_record_age_seconds, s.records) {
            (Some(age), _) => human_duration(age),
            (None, 0) => "none".into(),
            (None, _) => "unknown".into(),
        };
        let _ = writeln!(out, "oldest unsent:  {oldest}");
        let _ = writeln!(
            out,
            "delivery:       {:.1} records/s over the last minute, {} delivered since start",
            self.delivery_rate_records_per_second, self.delivered_records_total
        );
        for st in &self.streams {
            let _ = writeln!(
                out,
                "  {:<14}{}, {:.1} records/s, {} delivered, to {}",
                st.stream,
                st.state.as_str(),
                st.delivery_rate_records_per_second,
                st.delivered_records_total,
                st.destination
            );
            if let Some(e) = &st.error {
                let _ = writeln!(
                    out,
                    "  {:<14}{} ago: {}: {}",
                    "",
                    human_duration(e.age_seconds),
                    e.code,
                    e.message
                );
            }
        }
        if !self.sources.is_empty() {
            let _ = writeln!(out, "sources:");
        }
        for src in &self.sources {
            match (&src.problem, src.problem_age_seconds) {
                (None, _) => {
                    let _ = writeln!(out, "  {:<9}{}: running", src.kind, src.name);
                }
                (Some(p), age) => {
                    let _ = writeln!(
                        out,
                        "  {:<9}{}: FAILING for {}: {p}",
                        src.kind,
                        src.name,
                        human_duration(age.unwrap_or_default())
                    );
                }
            }
        }
        match &self.last_error {
            None => {
                let _ = writeln!(out, "last error:     none");
            }
            Some(e) => {
                let _ = writeln!(
                    out,
                    "last error:     {} ago, stream {}: {}: {}",
                    human_duration(e.age_seconds),
                    e.stream,
                    e.code,
                    e.message
                );
            }
        }
        out
    }

    /// The backlog, disk and damage lines.
    fn render_spool(&self, out: &mut String) {
        let s = &self.spool;
        // Segment files are what counts against max_bytes.
        let used = if s.max_bytes > 0 {
            s.segment_bytes as f64 * 100.0 / s.max_bytes as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "backlog:        {} records, {} ({used:.1}% of the {} spool{})",
            s.records,
            human_bytes(s.bytes),
            human_bytes(s.max_bytes),
            if s.segment_bytes >= s.max_bytes || s.refusing.as_deref() == Some("spool_full") {
                ", FULL: sources are waiting"
            } else {
                ""
            }
        );
        if let Some(free) = s.disk_free_bytes {
            let _ = writeln!(
                out,
                "spool disk:     {} in segment files, {} free on its filesystem{}",
                human_bytes(s.segment_bytes),
                human_bytes(free),
                if free < s.min_free_bytes {
                    " (below spool.min_free_bytes: DISK FULL, sources are waiting)"
                } else if s.refusing.as_deref() == Some("disk_full") {
                    " (no room for the next write above spool.min_free_bytes: DISK FULL, sources are waiting)"
                } else {
                    ""
                }
            );
        }
        if s.damaged_frames > 0 {
            let _ = writeln!(
                out,
                "spool damage:   {} damaged frames or files skipped (their records are lost; see the log)",
                s.damaged_frames
            );
        }
        if let Some(d) = &s.damage {
            let _ = writeln!(
                out,
                "spool losses:   {} records lost to spool damage (see {}; delete it once dealt with)",
                d.lost_records, d.path
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Refusing;

    fn status() -> Status {
        Status {
            version: "1.2.3".into(),
            pid: 42,
            uptime_seconds: 3725.0,
            spool: SpoolStatus {
                records: 1200,
                bytes: 3 << 20,
                max_bytes: 8 << 30,
                oldest_record_age_seconds: Some(75.4),
                segment_bytes: 4 << 20,
                disk_free_bytes: Some(10 << 30),
                min_free_bytes: 64 << 20,
                damaged_frames: 0,
                refusing: None,
                damage: None,
            },
            delivered_records_total: 9000,
            delivery_rate_records_per_second: 150.25,
            streams: vec![
                StreamStatus {
                    stream: "logs".into(),
                    delivered_records_total: 8000,
                    delivery_rate_records_per_second: 150.25,
                    destination: "us-east-1".into(),
                    state: DestinationState::Ok,
                    error: None,
                },
                StreamStatus {
                    stream: "audit".into(),
                    delivered_records_total: 1000,
                    delivery_rate_records_per_second: 0.0,
                    destination: "eu-west-1, as arn:aws:iam::123456789012:role/w".into(),
                    state: DestinationState::StreamMissing,
                    error: Some(ErrorStatus {
                        stream: "audit".into(),
                        code: "ResourceNotFoundException".into(),
                        message: "Stream audit under account 1 not found.".into(),
                        age_seconds: 4.0,
                    }),
                },
            ],
            last_error: Some(ErrorStatus {
                stream: "audit".into(),
                code: "ResourceNotFoundException".into(),
                message: "Stream audit under account 1 not found.".into(),
                age_seconds: 4.0,
            }),
            sources: vec![
                SourceStatus {
                    kind: "socket".into(),
                    name: "/run/shardline/in.sock".into(),
                    problem: None,
                    problem_age_seconds: None,
                },
                SourceStatus {
                    kind: "journald".into(),
                    name: "system".into(),
                    problem: Some("journalctl exited (exit status: 1)".into()),
                    problem_age_seconds: Some(3.0),
                },
            ],
        }
    }

    #[test]
    fn render_shows_backlog_rate_and_last_error() {
        let text = status().render();
        for needle in [
            "shardline 1.2.3, pid 42, up 1h 02m",
            "backlog:        1200 records, 3.0 MiB (0.0% of the 8.0 GiB spool)",
            "spool disk:     4.0 MiB in segment files, 10.0 GiB free on its filesystem",
            "oldest unsent:  1m 15s",
            "delivery:       150.2 records/s over the last minute, 9000 delivered since start",
            "  logs          ok, 150.2 records/s, 8000 delivered, to us-east-1\n",
            "  audit         STREAM MISSING, 0.0 records/s, 1000 delivered, to eu-west-1, as arn:aws:iam::123456789012:role/w\n                4s ago: ResourceNotFoundException: Stream audit under account 1 not found.\n",
            "last error:     4s ago, stream audit: ResourceNotFoundException: Stream audit under account 1 not found.",
            "sources:\n  socket   /run/shardline/in.sock: running\n  journald system: FAILING for 3s: journalctl exited (exit status: 1)\n",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        let mut full = status();
        full.spool.segment_bytes = full.spool.max_bytes;
        full.spool.disk_free_bytes = Some(1 << 20);
        full.spool.damaged_frames = 2;
        full.spool.damage = Some(DamageStatus {
            path: "/var/lib/shardline/spool/damaged/report".into(),
            events: 2,
            lost_records: 3000,
        });
        full.spool.oldest_record_age_seconds = None;
        full.last_error = None;
        let text = full.render();
        assert!(text.contains("FULL: sources are waiting"), "{text}");
        assert!(text.contains("DISK FULL"), "{text}");
        assert!(text.contains("2 damaged frames"), "{text}");
        assert!(
            text.contains(
                "3000 records lost to spool damage (see /var/lib/shardline/spool/damaged/report"
            ),
            "{text}"
        );
        assert!(text.contains("oldest unsent:  unknown"), "{text}");
        assert!(text.contains("last error:     none"), "{text}");
    }

    /// Regression (issue 22, N11): a client blocked because the next write does
    /// not fit above `min_free_bytes`, while the free space itself is still
    /// above it, saw no DISK FULL.
    #[test]
    fn a_refused_write_above_the_reserve_shows_disk_full() {
        let mut s = status();
        let text = s.render();
        assert!(!text.contains("FULL"), "{text}");
        s.spool.refusing = Some(Refusing::DiskFull.as_str().to_owned());
        let text = s.render();
        assert!(
            text.contains("no room for the next write above spool.min_free_bytes: DISK FULL"),
            "{text}"
        );
        s.spool.refusing = Some(Refusing::SpoolFull.as_str().to_owned());
        assert!(s.render().contains("FULL: sources are waiting"));
    }

    /// Regression (issue 22, N4): `user:pass@` in an endpoint was shown by
    /// `shardline status` (text and JSON; any local user can read `/status`).
    #[test]
    fn status_never_shows_endpoint_credentials() {
        use crate::deliver::destination::Destination;
        let mut s = status();
        s.streams[0].destination = Destination {
            region: Some("us-east-1".into()),
            endpoint: Some("http://alice:s3cret@127.0.0.1:4567".into()),
            ..Destination::default()
        }
        .describe();
        let json = serde_json::to_string(&s).unwrap();
        for shown in [s.render(), json] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("alice"), "{shown}");
            assert!(shown.contains("http://***@127.0.0.1:4567"), "{shown}");
        }
    }

    #[test]
    fn status_round_trips_through_json() {
        let s = status();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
