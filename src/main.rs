//! The `shardline` command: parses the CLI, sets up logging, loads the config and
//! runs the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shardline",
    version,
    about = "Forwards log records to Amazon Kinesis Data Streams without losing one"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Config file.
        #[arg(long, short, default_value = "/etc/shardline/shardline.toml")]
        config: PathBuf,
    },
    /// Send lines (from stdin or a file) to the agent's framed socket.
    Send {
        /// The agent's socket (a `[[socket]]` with `framing = "frames"`).
        #[arg(long)]
        socket: PathBuf,
        /// Partition key for every record (default: a random one each).
        #[arg(long)]
        partition_key: Option<String>,
        /// Wait until the agent has made the records durable, and report it.
        #[arg(long)]
        ack: bool,
        /// File to send instead of stdin.
        file: Option<PathBuf>,
    },
    /// Check a config file and list every problem in it.
    Validate {
        /// Config file.
        #[arg(long, short, default_value = "/etc/shardline/shardline.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match shardline::config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Send {
            socket,
            partition_key,
            ack,
            file,
        } => match send(socket, partition_key, ack, file) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = shardline::config::load(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        shardline::agent::run(config, shutdown_signal()).await?;
        Ok(())
    })
}

/// `shardline send`: true when every record was taken.
fn send(
    socket: PathBuf,
    partition_key: Option<String>,
    ack: bool,
    file: Option<PathBuf>,
) -> anyhow::Result<bool> {
    use shardline::source::socket::client::send_lines;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        match &file {
            Some(path) => {
                let f = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Ok::<_, anyhow::Error>(
                    send_lines(
                        &socket,
                        partition_key.as_deref(),
                        ack,
                        tokio::io::BufReader::new(f),
                    )
                    .await?,
                )
            }
            None => Ok(send_lines(
                &socket,
                partition_key.as_deref(),
                ack,
                tokio::io::BufReader::new(tokio::io::stdin()),
            )
            .await?),
        }
    })?;
    for e in &report.errors {
        eprintln!("refused: {e}");
    }
    if ack {
        println!(
            "sent {}, acknowledged {}, refused {}",
            report.sent, report.acknowledged, report.refused
        );
    } else {
        println!("sent {}, refused {}", report.sent, report.refused);
    }
    Ok(report.refused == 0
        && report.errors.is_empty()
        && (!ack || report.acknowledged == report.sent))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    let mut int =
        signal(SignalKind::interrupt()).expect("installing a SIGINT handler cannot fail on Unix");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
