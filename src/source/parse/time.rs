//! Event times: read from a parsed field in a `time_format`, and written as a
//! record's `timestamp` in a block's `timestamp_format`.

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};

use crate::config::parse::TimeFormat;

use super::value::Value;

/// A point in time: microseconds since 1970-01-01 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EventTime(pub i64);

impl EventTime {
    /// Now.
    pub(crate) fn now() -> EventTime {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime(since.as_micros() as i64)
    }

    fn utc(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// Whole seconds and milliseconds, for the RFC 3339 writer; times before
    /// 1970 are written as 1970.
    pub(crate) fn secs_millis(self) -> (u64, u32) {
        let t = self.0.max(0);
        ((t / 1_000_000) as u64, ((t % 1_000_000) / 1000) as u32)
    }

    /// The time written in `format` (not RFC 3339, which the formatter writes
    /// itself): the JSON value's text, a number or a quoted string.
    pub(crate) fn write(self, format: &TimeFormat, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match format {
            TimeFormat::EpochS => write!(out, "{}", self.0.div_euclid(1_000_000)),
            TimeFormat::EpochMs => write!(out, "{}", self.0.div_euclid(1000)),
            TimeFormat::EpochUs => write!(out, "{}", self.0),
            TimeFormat::Rfc3339 => {
                let s = self
                    .utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                write!(out, "\"{s}\"")
            }
            TimeFormat::Strftime(f) => {
                let s = self.utc().format(f).to_string();
                serde_json::to_writer(&mut *out, &s).map_err(std::io::Error::other)
            }
        };
    }
}

/// The time in `v` as `format` says it is written; `None` when it is not.
pub(crate) fn read_time(v: &Value<'_>, format: &TimeFormat) -> Option<EventTime> {
    let scale = match format {
        TimeFormat::EpochS => 1_000_000.0,
        TimeFormat::EpochMs => 1000.0,
        TimeFormat::EpochUs => 1.0,
        TimeFormat::Rfc3339 => {
            let s = text(v)?;
            return DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| EventTime(t.timestamp_micros()));
        }
        TimeFormat::Strftime(f) => return strftime(text(v)?.trim(), f),
    };
    let n = match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => text(v)?.trim().parse::<f64>().ok()?,
    };
    let micros = n * scale;
    (micros.is_finite() && micros.abs() < 1e17).then_some(EventTime(micros as i64))
}

fn text<'v>(v: &'v Value<'_>) -> Option<&'v str> {
    match v {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// Reads `s` in a strftime format: with an offset when the format has one,
/// else as UTC; a format without a year takes the current one (or the last,
/// for a date more than a day ahead: December's lines read in January).
fn strftime(s: &str, f: &str) -> Option<EventTime> {
    if f == APACHE {
        if let Some(t) = apache(s) {
            return Some(t);
        }
    }
    let zoned = ["%z", "%:z", "%::z", "%#z", "%Z"]
        .iter()
        .any(|z| f.contains(z));
    let dated = ["%Y", "%y", "%G", "%C", "%F", "%D", "%x", "%c", "%s", "%+"]
        .iter()
        .any(|d| f.contains(d));
    let parse = |s: &str, f: &str| -> Option<i64> {
        if zoned {
            DateTime::parse_from_str(s, f)
                .ok()
                .map(|t| t.timestamp_micros())
        } else {
            NaiveDateTime::parse_from_str(s, f)
                .ok()
                .map(|t| Utc.from_utc_datetime(&t).timestamp_micros())
        }
    };
    if dated {
        return parse(s, f).map(EventTime);
    }
    let now = EventTime::now().utc();
    let year = now.year();
    let at = parse(&format!("{year} {s}"), &format!("%Y {f}"))?;
    let day = 86_400_000_000;
    if at > now.timestamp_micros() + day {
        return parse(&format!("{} {s}", year - 1), &format!("%Y {f}")).map(EventTime);
    }
    Some(EventTime(at))
}

/// Apache's `%t` format, the access presets' time.
const APACHE: &str = "%d/%b/%Y:%H:%M:%S %z";

/// `s` in [`APACHE`]'s format, read without chrono's format interpreter when
/// it is exactly `10/Oct/2000:13:55:36 -0700` in shape (two-digit day, month
/// abbreviation as Apache writes it, seconds below 60, a four-digit offset);
/// `None` sends any other text through chrono, so what is read is the same.
fn apache(s: &str) -> Option<EventTime> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let b: &[u8; 26] = s.as_bytes().try_into().ok()?;
    let num = |at: usize, len: usize| -> Option<i64> {
        b[at..at + len].iter().try_fold(0, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let seps = [
        (2, b'/'),
        (6, b'/'),
        (11, b':'),
        (14, b':'),
        (17, b':'),
        (20, b' '),
    ];
    if seps.iter().any(|&(at, c)| b[at] != c) {
        return None;
    }
    let month = MONTHS.iter().position(|m| b[3..6] == m[..])? as u32 + 1;
    let (day, year) = (num(0, 2)?, num(7, 4)?);
    let (hour, min, sec) = (num(12, 2)?, num(15, 2)?, num(18, 2)?);
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (off_h, off_m) = (num(22, 2)?, num(24, 2)?);
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day as u32)?;
    if hour > 23 || min > 59 || sec > 59 || off_h > 23 || off_m > 59 {
        return None;
    }
    let days = i64::from(date.num_days_from_ce()) - 719_163;
    let offset = sign * (off_h * 3600 + off_m * 60);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(EventTime(secs * 1_000_000))
}
