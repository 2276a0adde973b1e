//! logfmt: `key=value key2="quoted value"` pairs.
use super::super::value::{Failure, Fields};
pub(super) fn parse<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
