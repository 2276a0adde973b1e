//! CSV lines (RFC 4180 quoting) and the Kinesis Agent's CSVTOJSON split.
