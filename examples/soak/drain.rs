//! The end of the load: [`drain`] waits, for `main`, until the agent's spool has
//! stayed empty for `DRAIN_QUIET`, watching that the agent keeps running. It owns
//! no state; the agent's address comes from `Shared`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::process::AgentProcess;
use crate::progress::say;
use crate::shared::Shared;

/// How long the spool must stay empty before the stream is read back: longer than
/// the tailer's rescan interval (1 s), so no written line is still unread.
const DRAIN_QUIET: Duration = Duration::from_secs(5);

/// Waits until the agent's spool has stayed empty for `DRAIN_QUIET`; false if it
/// did not within `limit`.
pub(crate) async fn drain(
    agent: &mut AgentProcess,
    state: &Shared,
    limit: Duration,
    work: &Path,
) -> Result<bool, String> {
    let deadline = Instant::now() + limit;
    let mut empty_since: Option<Instant> = None;
    let mut next_line = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(exit) = agent.exited() {
            state.unexpected_exits.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "the agent exited with {exit} while draining; logs in {}",
                work.display()
            ));
        }
        let Some((_, addr)) = *state.agent.lock().expect("not poisoned") else {
            return Err("no agent while draining".into());
        };
        match shardline::status::fetch(addr, Duration::from_secs(2)).await {
            Ok(s) if s.spool.records == 0 => {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= DRAIN_QUIET {
                    return Ok(true);
                }
            }
            Ok(s) => {
                empty_since = None;
                if Instant::now() >= next_line {
                    next_line += Duration::from_secs(10);
                    say!("draining, {} records in the spool", s.spool.records);
                }
            }
            Err(_) => empty_since = None,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(false)
}
