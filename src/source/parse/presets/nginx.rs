//! nginx access (the default `combined` log_format) and error log presets.
use super::super::value::{Failure, Fields};
pub(super) const ACCESS_KEYS: &[&str] = &[];
pub(super) const ERROR_KEYS: &[&str] = &[];
pub(super) const ACCESS_TIME: (&str, &str) = ("time", "%d/%b/%Y:%H:%M:%S %z");
pub(super) const ERROR_TIME: (&str, &str) = ("time", "%Y/%m/%d %H:%M:%S");
pub(super) fn access<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn error<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
