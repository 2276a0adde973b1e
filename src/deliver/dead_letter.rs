//! The dead-letter file: where records Kinesis refused for good (or that expired)
//! are written, fsynced, before they leave the spool.

use std::path::PathBuf;
use std::sync::Mutex;

use super::kinesis::ErrorCode;
use crate::record::UserRecord;

/// A user record Kinesis refused for good, with the reason.
#[derive(Debug, Clone)]
pub struct Failure {
    pub stream: String,
    /// The user records of the refused Kinesis record.
    pub records: Vec<UserRecord>,
    /// Kinesis's error code (or `Expired`).
    pub code: ErrorCode,
    pub message: String,
}

/// The dead-letter file: records Kinesis refused for good, one JSON object per line
/// (`stream`, `partition_key`, `explicit_hash_key`, `data_base64`, `code`,
/// `message`, `time`). Written and fsynced before the records leave the spool.
pub(crate) struct DeadLetter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl DeadLetter {
    pub(crate) fn new(path: PathBuf) -> DeadLetter {
        DeadLetter {
            path,
            lock: Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(super) fn write(&self, f: &Failure) -> std::io::Result<()> {
        use base64::Engine as _;
        use std::io::Write as _;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::new();
        for r in &f.records {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({
                    "stream": f.stream,
                    "partition_key": r.partition_key,
                    "explicit_hash_key": r.explicit_hash_key.map(|k| k.to_string()),
                    "data_base64": base64::engine::general_purpose::STANDARD.encode(&r.data),
                    "code": f.code.as_str(),
                    "message": f.message,
                    "time": time,
                }),
            )?;
            out.push(b'\n');
        }
        let _guard = self.lock.lock().expect("dead-letter lock poisoned");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&out)?;
        file.sync_data()
    }
}
