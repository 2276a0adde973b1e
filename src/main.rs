//! The `shardline` command: parses the CLI, sets up logging, loads the config and
//! runs the agent, or asks a running one for its status or its files.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The config file of every command unless `--config` names another.
const DEFAULT_CONFIG: &str = "/etc/shardline/shardline.toml";
/// Longest wait for the agent's answer to `shardline status`.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit status of `shardline status` when no agent answers (as `systemctl status`
/// and LSB init scripts say "not running").
const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status of `shardline status` when something listens at the address but
/// gives no answer in time: the agent runs but is stuck or busy (as LSB's 4,
/// "status is unknown").
const EXIT_NOT_ANSWERING: u8 = 4;

#[derive(Parser)]
#[command(
    name = "shardline",
    version,
    about = "Forwards log records to Amazon Kinesis Data Streams and Amazon Data Firehose without losing one"
)]
struct Cli {
    /// Log format: `auto` is `journal` under systemd (JOURNAL_STREAM names stderr),
    /// else `human`; `human` has colours on a terminal only.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    /// Timestamp, level, message and fields.
    Human,
    /// One JSON object per line, fields at the top level.
    Json,
    /// For journald: a `<N>` syslog priority prefix, no timestamp, no colours.
    Journal,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Once started, write the process id and the metrics endpoint's bound
        /// address here (JSON); removed at exit.
        #[arg(long)]
        status_file: Option<PathBuf>,
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
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Try a block's parser on sample lines (a file, or stdin): prints the
    /// record each line becomes, or why it did not parse; exits with 1 when a
    /// line did not parse.
    Parse {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The block, as `validate` names it: `file[0]`, `socket[1]`,
        /// `journald[0]` (default: the one block with a parse table).
        #[arg(long)]
        source: Option<String>,
        /// File of sample lines (default: stdin).
        sample: Option<PathBuf>,
        /// Print the presets, their keys and time formats, and exit.
        #[arg(long)]
        presets: bool,
    },
    /// Write a shardline config from another agent's configuration.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Show a running agent's backlog, delivery rate and last error; exits with 3
    /// when nothing listens at its address (not running), 4 when something listens
    /// but does not answer in time (running, stuck or busy).
    Status {
        /// Config file; the agent is asked at its `metrics.listen` address.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Ask this address instead of the config's `metrics.listen`.
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a running agent's tailed files: identity, read position, size and
    /// whether everything read is delivered. With --wait-delivered PATH, wait
    /// until that file is read to its end and delivered: exits with 1 on the
    /// timeout, 3 or 4 as `status`, 5 when the agent does not tail the file.
    Files(FilesArgs),
    /// Look at the config's spool without opening it: read-only, never takes its
    /// lock, safe while the agent runs. Exits with 2 when it cannot be read.
    Spool {
        /// Config file.
        #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Put the records of a dead-letter file back into the spool of their
    /// streams, once, and rename it to FILE.redriven-<unix seconds>. Exits with 1
    /// when a line is refused (nothing is redriven then), 2 on an error.
    Redrive {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The dead-letter file (NDJSON, as the agent writes it).
        file: PathBuf,
    },
}

/// `shardline files`.
#[derive(clap::Args)]
struct FilesArgs {
    /// Config file; the agent is asked at its `metrics.listen` address.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Ask this address instead of the config's `metrics.listen`.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
    /// Wait until the file at this path (by its device and inode, even if
    /// renamed meanwhile) is read to its end and everything read is delivered.
    #[arg(long, value_name = "PATH")]
    wait_delivered: Option<PathBuf>,
    /// Longest wait for --wait-delivered, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        requires = "wait_delivered"
    )]
    timeout: u64,
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Check every frame of every segment and ack file; exits with 1 when
    /// something is damaged.
    Check {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per stream: records, bytes, oldest record age, segments, checkpoints.
    Inspect {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a stream's undelivered records as NDJSON (the dead-letter file's
    /// fields), oldest first.
    Export {
        /// The stream, as the config names it.
        #[arg(long)]
        stream: String,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// From the Amazon Kinesis Agent's agent.json: prints the TOML (or writes it
    /// to --output), and a `warning:` line on stderr for each setting with no
    /// counterpart; exits with 2 when the file cannot be imported.
    KinesisAgent {
        /// The agent's configuration (/etc/aws-kinesis/agent.json), or `-` for stdin.
        file: PathBuf,
        /// Write the config here instead of to stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replace --output if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
}

/// Exit status of `shardline import` when the input cannot be imported or the
/// output cannot be written (as clap's usage errors).
const EXIT_IMPORT_FAILED: u8 = 2;

fn main() -> ExitCode {
    shardline::agent::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => validate(&config),
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
        Command::Run {
            config,
            status_file,
        } => {
            init_logging(cli.log_format);
            match run(config, status_file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Through the log, so journald files it as an error.
                    tracing::error!(error = format!("{e:#}"), "Agent failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Parse {
            config,
            source,
            sample,
            presets,
        } => parse_command(&config, source.as_deref(), sample, presets),
        Command::Import {
            from:
                ImportFrom::KinesisAgent {
                    file,
                    output,
                    force,
                },
        } => match import_kinesis_agent(&file, output.as_deref(), force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_IMPORT_FAILED)
            }
        },
        Command::Files(args) => files(args),
        Command::Spool { config, command } => exit_code(spool(&config, command)),
        Command::Redrive { config, file } => exit_code(redrive(&config, &file)),
        Command::Status { config, addr, json } => match status(config, addr, json) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `shardline parse`, with its exit status.
/// `shardline validate`: the problems, or ok with a hint per former spelling.
fn validate(config: &std::path::Path) -> ExitCode {
    match shardline::config::load(config) {
        Ok(loaded) => {
            println!("{}: ok", config.display());
            for hint in &loaded.deprecated {
                println!("hint: {hint}");
            }
            if let Some(in_use) = shardline::agent::spool_in_use(&loaded) {
                // Not a fault of the file: validating the running agent's
                // own config before a reload is the common case.
                println!("note: {in_use}; `shardline run` with this config refuses to start while it holds it");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_command(
    config: &std::path::Path,
    source: Option<&str>,
    sample: Option<PathBuf>,
    presets: bool,
) -> ExitCode {
    if presets {
        print!("{}", shardline::presets_table());
        return ExitCode::SUCCESS;
    }
    match parse(config, source, sample) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `shardline parse`: 0 when every line parsed, 1 when one did not.
fn parse(
    config: &std::path::Path,
    source: Option<&str>,
    sample: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = shardline::config::load(config)?;
    let mut input: Box<dyn std::io::BufRead> = match &sample {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut out = std::io::stdout().lock();
    let report =
        shardline::try_lines(&config, source, &mut input, &mut out).map_err(anyhow::Error::msg)?;
    eprintln!(
        "{} parsed, {} did not parse{}",
        report.parsed,
        report.failed,
        if report.headers > 0 {
            format!(", {} header", report.headers)
        } else {
            String::new()
        }
    );
    Ok(if report.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn run(config: PathBuf, status_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config_path = config.clone();
    let config = shardline::config::load(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let options = shardline::agent::RunOptions {
            status_file,
            config_path: Some(config_path),
        };
        shardline::agent::run_with(config, shutdown_signal(), options).await?;
        Ok(())
    })
}

/// `shardline import kinesis-agent`: reads `file` (`-`: stdin), writes the
/// config to `output` (never over an existing file unless `force`) or stdout,
/// the warnings to stderr.
fn import_kinesis_agent(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    force: bool,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let (json, from) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        (text, "agent.json (stdin)".to_owned())
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        (text, file.display().to_string())
    };
    let imported = shardline::config::kinesis_agent(&json, &from)?;
    match output {
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true);
            if force {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            let mut f = options.open(path).with_context(|| {
                if path.exists() && !force {
                    format!("{} exists: pass --force to replace it", path.display())
                } else {
                    format!("cannot create {}", path.display())
                }
            })?;
            f.write_all(imported.toml.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => print!("{}", imported.toml),
    }
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// `shardline send`: true when every record was taken.
fn send(
    socket: PathBuf,
    partition_key: Option<String>,
    ack: bool,
    file: Option<PathBuf>,
) -> anyhow::Result<bool> {
    use shardline::send_lines;
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

/// `shardline files`, with its exit status.
fn files(args: FilesArgs) -> ExitCode {
    match agent_addr(&args.config, args.addr) {
        Ok(addr) => ExitCode::from(shardline::status::files_command(
            addr,
            args.json,
            args.wait_delivered.as_deref(),
            Duration::from_secs(args.timeout),
        )),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's endpoint: `addr`, or the config's `metrics.listen`.
fn agent_addr(config: &std::path::Path, addr: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    if let Some(a) = addr {
        return Ok(a);
    }
    let listen = shardline::config::load(config)?.metrics.listen;
    anyhow::ensure!(
        listen.port() != 0,
        "metrics.listen in {} has port 0 (any free port): pass the agent's address with --addr",
        config.display()
    );
    Ok(listen)
}

/// The exit status of `spool` and `redrive`: 2 on an error.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

/// `shardline redrive`: 0 when the file was redriven, 1 when a line was refused.
fn redrive(config: &std::path::Path, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let report = shardline::redrive(&shardline::config::load(config)?, file)?;
    print!("{}", report.render());
    Ok(ExitCode::from(u8::from(!report.refused.is_empty())))
}

/// `shardline spool check|inspect|export`.
fn spool(config: &std::path::Path, command: SpoolCommand) -> anyhow::Result<ExitCode> {
    let dir = shardline::config::load(config)?.spool.dir;
    let dir = dir.with_context(|| format!("{} has no spool.dir", config.display()))?;
    let code = match command {
        SpoolCommand::Check { json } => {
            let report = shardline::check_spool(&dir)?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&report)?),
                false => print!("{}", report.render()),
            }
            u8::from(report.damaged() > 0)
        }
        SpoolCommand::Inspect { json } => {
            let streams = shardline::inspect_spool(&dir)?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&streams)?),
                false => print!("{}", shardline::inspect_table(&streams)),
            }
            0
        }
        SpoolCommand::Export { stream } => {
            let done = shardline::export_spool(&dir, &stream, &mut std::io::stdout().lock())?;
            eprintln!("{done}");
            u8::from(done.unreadable_entries > 0)
        }
    };
    Ok(ExitCode::from(code))
}

fn status(config: PathBuf, addr: Option<SocketAddr>, json: bool) -> anyhow::Result<ExitCode> {
    // The spool's lock tells who runs, whatever address it listens at.
    let in_use = shardline::config::load(&config)
        .ok()
        .and_then(|c| shardline::agent::spool_in_use(&c));
    let addr = agent_addr(&config, addr)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(shardline::status::fetch(addr, STATUS_TIMEOUT)) {
        Ok(s) if json => println!("{}", serde_json::to_string_pretty(&s)?),
        Ok(s) => {
            print!("{}", s.render());
            if let Some(in_use) = in_use {
                println!("{in_use}");
            }
        }
        Err(e) if e.is_not_running() => {
            let why = format!("{:#}", anyhow::Error::from(e));
            if json {
                let down = serde_json::json!({"running": false, "addr": addr, "error": why, "spool_in_use": in_use});
                println!("{}", serde_json::to_string_pretty(&down)?);
            }
            if let Some(in_use) = in_use {
                // An agent holds the spool but does not answer here: another
                // metrics.listen, or a copy of this config.
                eprintln!("shardline does not answer at {addr}: {why}; but {in_use}");
                return Ok(ExitCode::from(EXIT_NOT_ANSWERING));
            }
            eprintln!("shardline is not running (no answer at {addr}): {why}");
            return Ok(ExitCode::from(EXIT_NOT_RUNNING));
        }
        Err(e) if e.is_not_answering() => {
            let why = format!("{:#}", anyhow::Error::from(e));
            if json {
                let stuck = serde_json::json!({"running": true, "answering": false, "addr": addr, "error": why});
                println!("{}", serde_json::to_string_pretty(&stuck)?);
            }
            eprintln!("shardline is running at {addr} but not answering: {why}");
            return Ok(ExitCode::from(EXIT_NOT_ANSWERING));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether stderr is the journal stream systemd gave us: `JOURNAL_STREAM` is
/// `device:inode` of that stream (`systemd.exec(5)`), so a stderr redirected
/// elsewhere by the unit or a shell does not count.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    expected == format!("{}:{}", meta.dev(), meta.ino())
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>` debug), which
/// journald reads as the entry's priority.
struct PriorityPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // aws-config warns at every refused AssumeRole (each retry); delivery
    // reports it, with the role, once per interval. RUST_LOG naming aws_config
    // decides for itself.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("aws_config")) {
        filter = filter.add_directive(
            "aws_config::sts::assume_role=error"
                .parse()
                .expect("a valid directive"),
        );
    }
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Human,
        f => f,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .event_format(PriorityPrefix(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .init(),
        LogFormat::Human | LogFormat::Auto => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}

/// Resolves on SIGTERM or SIGINT. (SIGHUP reloads the config: the agent's run
/// loop handles it.)
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
