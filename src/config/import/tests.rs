//! Tests of the agent.json mapping.

use super::*;

#[test]
fn placeholder() {
    assert!(kinesis_agent("{}", "a.json").is_err());
}
