//! The time a line was read, written as RFC 3339 UTC with milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use super::TIMESTAMP_BYTES;

/// The time a line was read, as RFC 3339 UTC with milliseconds; the date and
/// time of day are rendered once per second.
#[derive(Debug, Clone, Default)]
pub(super) struct Clock {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`.
    prefix: [u8; TIMESTAMP_BYTES - 4],
}

impl Clock {
    pub(super) fn now(&mut self) -> [u8; TIMESTAMP_BYTES] {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.at(since.as_secs(), since.subsec_millis())
    }

    pub(super) fn at(&mut self, secs: u64, millis: u32) -> [u8; TIMESTAMP_BYTES] {
        if self.second != Some(secs) {
            self.second = Some(secs);
            let (y, m, d) = civil_from_days((secs / 86_400) as i64);
            let t = secs % 86_400;
            let text = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.",
                t / 3600,
                t / 60 % 60,
                t % 60
            );
            // Years past 9999 do not fit the format: never on a running host.
            let n = text.len().min(self.prefix.len());
            self.prefix[..n].copy_from_slice(&text.as_bytes()[..n]);
        }
        let mut out = [0u8; TIMESTAMP_BYTES];
        out[..self.prefix.len()].copy_from_slice(&self.prefix);
        let ms = millis.min(999);
        out[20] = b'0' + (ms / 100) as u8;
        out[21] = b'0' + (ms / 10 % 10) as u8;
        out[22] = b'0' + (ms % 10) as u8;
        out[23] = b'Z';
        out
    }
}

/// Year, month and day of a day count since 1970-01-01 (the proleptic Gregorian
/// calendar; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
