//! Progress lines of the run. Owns the clock of the load (`STARTED`, set once by
//! `main` when the load starts); every part of the soak prints through [`say!`],
//! which stamps a line with the seconds since then and the UTC time of day.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// When the load started: progress lines count seconds from it.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the clock of the progress lines (once: a second call returns the first
/// start). Called by `main` when the load starts.
pub(crate) fn start_clock() -> Instant {
    *STARTED.get_or_init(Instant::now)
}

/// Prints a progress line: seconds since the load started and the UTC time of day
/// (to match the agent's log), then the message.
macro_rules! say {
    ($($arg:tt)*) => { $crate::progress::print_line(format_args!($($arg)*)) };
}
pub(crate) use say;

/// The line [`say!`] prints.
pub(crate) fn print_line(message: std::fmt::Arguments) {
    let elapsed = STARTED.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 86_400_000;
    println!(
        "soak: {elapsed:>5.0}s {:02}:{:02}:{:02}.{:03}Z  {message}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    );
}
