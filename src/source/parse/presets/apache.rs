//! Apache httpd access (common, combined) and error log presets.
use super::super::value::{Failure, Fields};
pub(super) const COMMON_KEYS: &[&str] = &[];
pub(super) const COMBINED_KEYS: &[&str] = &[];
pub(super) const ERROR_KEYS: &[&str] = &[];
pub(super) const TIME: (&str, &str) = ("time", "%d/%b/%Y:%H:%M:%S %z");
pub(super) const ERROR_TIME: (&str, &str) = ("time", "");
pub(super) fn common<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn combined<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn error<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
