//! Integration tests: the real agent against an in-process Kinesis emulator on
//! loopback, the shared vectors of an independent implementation, and the public
//! Node.js deaggregator.

mod util;

mod aggregation;
mod cli;
mod codec;
mod compression;
mod cycles;
mod delivery;
mod destination;
mod destination_delivery;
mod file;
mod firehose;
mod fleet;
mod format;
mod import;
mod journald;
mod layout;
mod monitoring;
mod packaging;
mod parse;
mod parsing;
mod pipeline;
mod producer;
mod proxy;
mod release;
mod service;
mod sizes;
mod socket;
mod spool;
mod spool_tools;
mod status;
mod streams;
