//! The faults: [`schedule`] draws a run's fault plan from the seed (called by
//! `main` before anything starts); [`Chaos`] applies it. `Chaos` owns the shard
//! count it last asked for and the rest of the seeded random numbers; it switches
//! the destination's faults, reshards a Kinesis stream, kills, stops and restarts
//! the agent process, and counts all of it in `Shared`. `main` hands it the running agent and
//! gets back the one running at the end of the load.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ScalingType;

use crate::destination::Destination;
use crate::kinesis::{wait_active, INITIAL_SHARDS, STREAM};
use crate::process::{AgentCommand, AgentProcess, STOP_LIMIT};
use crate::progress::say;
use crate::shared::Shared;

/// Shard counts a reshard picks from.
const RESHARD_RANGE: std::ops::RangeInclusive<i32> = 2..=5;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// A burst at the endpoint: throttled entries (and, for Firehose, failed
    /// records and slow answers), HTTP 500s, connection resets.
    Inject,
    /// Every connection to the endpoint cut for this long.
    Outage(Duration),
    OutageEnd,
    /// UpdateShardCount to another count (Kinesis only).
    Reshard,
    /// SIGKILL, then a restart on the same spool.
    Kill,
    /// SIGTERM (graceful), then a restart.
    Term,
}

/// The fault schedule of a run of length `run`, by time from the start.
pub(crate) fn schedule(run: Duration, rng: &mut fastrand::Rng) -> Vec<(Duration, Fault)> {
    let mut secs = |lo: u64, hi: u64| Duration::from_secs(rng.u64(lo..=hi));
    let mut plan = Vec::new();
    let mut outages = Vec::new();
    let mut t = secs(50, 80);
    loop {
        let length = secs(20, 40);
        if t + length > run {
            break;
        }
        outages.push((t, t + length));
        plan.push((t, Fault::Outage(length)));
        plan.push((t + length, Fault::OutageEnd));
        t += length + secs(60, 120);
    }
    // Reshards go through the endpoint too: none during an outage.
    let mut t = secs(20, 40);
    while t < run {
        let at = outages
            .iter()
            .find(|(start, end)| t + Duration::from_secs(2) >= *start && t < *end)
            .map_or(t, |(_, end)| *end + Duration::from_secs(3));
        if at < run {
            plan.push((at, Fault::Reshard));
        }
        t = at + secs(60, 120);
    }
    let mut t = secs(30, 60);
    while t < run {
        plan.push((t, Fault::Kill));
        t += secs(60, 120);
    }
    let mut t = secs(10, 20);
    while t < run {
        plan.push((t, Fault::Inject));
        t += secs(20, 40);
    }
    plan.push((run / 2 + secs(0, 10), Fault::Term));
    plan.sort_by_key(|(t, _)| *t);
    plan
}

/// Applies the schedule to the endpoint, the stream and the agent process.
pub(crate) struct Chaos<'a> {
    destination: &'a Destination,
    state: &'a Shared,
    command: &'a AgentCommand,
    /// The stream's shard count since the last reshard.
    shards: i32,
    rng: fastrand::Rng,
}

impl<'a> Chaos<'a> {
    pub(crate) fn new(
        destination: &'a Destination,
        state: &'a Shared,
        command: &'a AgentCommand,
        rng: fastrand::Rng,
    ) -> Chaos<'a> {
        Chaos {
            destination,
            state,
            command,
            shards: INITIAL_SHARDS,
            rng,
        }
    }

    /// Applies `plan` (times from `started`) to `agent` and its successors, and
    /// keeps the last one running until `end`; returns it.
    pub(crate) async fn run(
        &mut self,
        plan: Vec<(Duration, Fault)>,
        started: Instant,
        end: Instant,
        mut agent: AgentProcess,
    ) -> Result<AgentProcess, String> {
        for (at, fault) in plan {
            agent = self.wait_until(started + at, agent).await?;
            agent = self.apply(fault, agent).await?;
        }
        self.wait_until(end, agent).await
    }

    /// Sleeps until `when`, checking that the agent keeps running; an agent that
    /// exited on its own is counted and started again.
    async fn wait_until(
        &mut self,
        when: Instant,
        mut agent: AgentProcess,
    ) -> Result<AgentProcess, String> {
        while Instant::now() < when {
            tokio::time::sleep(
                when.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            )
            .await;
            if let Some(exit) = agent.exited() {
                self.state.unexpected_exits.fetch_add(1, Ordering::Relaxed);
                say!(
                    "the agent exited on its own with {exit}; log: {}",
                    agent.log().display()
                );
                agent = self.restart(agent).await?;
            }
        }
        Ok(agent)
    }

    async fn apply(&mut self, fault: Fault, agent: AgentProcess) -> Result<AgentProcess, String> {
        match fault {
            Fault::Inject => self.destination.inject(self.state),
            Fault::Outage(length) => self.outage(length),
            Fault::OutageEnd => self.outage_end(),
            Fault::Reshard => self.reshard().await?,
            Fault::Kill => return self.kill(agent).await,
            Fault::Term => return self.term(agent).await,
        }
        Ok(agent)
    }

    fn outage(&self, length: Duration) {
        let s = self.state;
        self.destination.outage(true);
        s.outage_on.store(true, Ordering::Relaxed);
        s.outages.fetch_add(1, Ordering::Relaxed);
        s.outage_ms
            .fetch_add(length.as_millis() as u64, Ordering::Relaxed);
        say!("outage for {} s", length.as_secs());
    }

    fn outage_end(&self) {
        self.destination.outage(false);
        self.state.outage_on.store(false, Ordering::Relaxed);
        say!("outage over");
    }

    /// UpdateShardCount to another count in `RESHARD_RANGE`; a refused one is
    /// skipped, and so is every one for a Firehose stream.
    async fn reshard(&mut self) -> Result<(), String> {
        let Some(client) = self.destination.kinesis() else {
            return Ok(());
        };
        let to = loop {
            let n = self.rng.i32(RESHARD_RANGE);
            if n != self.shards {
                break n;
            }
        };
        match client
            .update_shard_count()
            .stream_name(STREAM)
            .target_shard_count(to)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
        {
            Ok(_) => {
                wait_active(client).await?;
                say!("resharded {} → {to}", self.shards);
                self.shards = to;
                self.state.reshards.fetch_add(1, Ordering::Relaxed);
                self.state
                    .shard_history
                    .lock()
                    .expect("not poisoned")
                    .push(to);
            }
            Err(e) => say!("UpdateShardCount failed, skipped: {e:?}"),
        }
        Ok(())
    }

    async fn kill(&mut self, mut agent: AgentProcess) -> Result<AgentProcess, String> {
        agent.kill();
        self.note_stop("SIGKILL");
        self.state.kills.fetch_add(1, Ordering::Relaxed);
        say!("agent SIGKILLed");
        self.restart(agent).await
    }

    async fn term(&mut self, mut agent: AgentProcess) -> Result<AgentProcess, String> {
        self.note_stop("SIGTERM");
        agent.signal("TERM")?;
        let started = Instant::now();
        match agent.wait_exit(STOP_LIMIT).await {
            Ok(exit) if exit.success() => say!(
                "agent stopped by SIGTERM in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            other => {
                self.state.failed_stops.fetch_add(1, Ordering::Relaxed);
                say!(
                    "graceful stop failed: {other:?}; log: {}",
                    agent.log().display()
                );
            }
        }
        self.state.terms.fetch_add(1, Ordering::Relaxed);
        self.restart(agent).await
    }

    /// Notes when the schedule stopped the agent, and how.
    fn note_stop(&self, how: &'static str) {
        let mut stops = self.state.stops.lock().expect("not poisoned");
        stops.push((Instant::now(), how));
    }

    /// Starts the next incarnation once `old` is gone.
    async fn restart(&mut self, old: AgentProcess) -> Result<AgentProcess, String> {
        drop(old);
        let n = self.state.incarnations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.state.agent.lock().expect("not poisoned") = None;
        let mut agent = self.command.spawn(n)?;
        let addr = agent.ready().await?;
        *self.state.agent.lock().expect("not poisoned") = Some((n, addr));
        Ok(agent)
    }
}
