//! Kinesis through an HTTPS proxy: the real binary, an `https://` endpoint (a TLS
//! front for the emulator, its CA trusted through `SSL_CERT_FILE`), and a CONNECT
//! proxy on 127.0.0.1 that counts its tunnels. `HTTPS_PROXY` and `NO_PROXY` are
//! honoured, `kinesis.proxy` names one itself, and `kinesis.proxy = "none"` goes
//! direct.

use std::time::Duration;

use crate::util::proxy::{ConnectProxy, TlsFront};
use crate::util::{
    create_stream, send_lines, stream_data, write_binary_config, AgentProcess, Emulator, Workdir,
};

const RECORDS: usize = 50;

/// Starts the binary with `[kinesis]` extras and environment, sends
/// records through its socket, and waits until the stream holds them.
async fn run_through(
    emu: &Emulator,
    front: &TlsFront,
    tag: &str,
    kinesis_extra: &str,
    env: &[(&str, String)],
) -> (AgentProcess, Workdir) {
    let work = Workdir::new();
    let config = write_binary_config(&work, &front.endpoint(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "request_timeout_ms = 60000\n",
        &format!("request_timeout_ms = 60000\n{kinesis_extra}\n"),
    );
    std::fs::write(&config, text).unwrap();
    let mut agent = AgentProcess::spawn(&work, tag, &config, &[], |c| {
        c.env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env("SSL_CERT_FILE", &front.ca);
        for (k, v) in env {
            c.env(k, v);
        }
    });
    agent.metrics_addr().await;
    send_lines(
        &work.path("in.sock"),
        (0..RECORDS).map(|i| format!("{tag}-{i}")),
    )
    .await;
    let client = emu.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let data = stream_data(&client, "logs").await;
        let mine = data
            .iter()
            .filter(|d| d.starts_with(format!("{tag}-").as_bytes()))
            .count();
        if mine >= RECORDS {
            assert_eq!(mine, RECORDS, "{tag}: records arrived twice");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{tag}: {mine} of {RECORDS} records arrived\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (agent, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_requests_go_through_the_configured_or_environment_proxy() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let certs = tempfile::tempdir().unwrap();
    let front = TlsFront::start(emu.addr, certs.path()).await;
    let proxy = ConnectProxy::start().await;

    // HTTPS_PROXY from the environment.
    let (agent, _work) =
        run_through(&emu, &front, "env", "", &[("HTTPS_PROXY", proxy.url())]).await;
    let log = agent.stop().await;
    assert!(proxy.tunnels() >= 1, "no tunnel:\n{log}");
    assert_eq!(
        front.accepted.load(std::sync::atomic::Ordering::SeqCst),
        proxy.tunnels(),
        "a TLS session did not come through the proxy"
    );
    assert!(
        log.contains("Kinesis requests go through a proxy") && log.contains("HTTPS_PROXY"),
        "{log}"
    );

    // kinesis.proxy, with NO_PROXY in the environment naming another host.
    let before = proxy.tunnels();
    let (agent, _work) = run_through(
        &emu,
        &front,
        "config",
        &format!("proxy = \"{}\"", proxy.url()),
        &[("NO_PROXY", "example.invalid".into())],
    )
    .await;
    agent.stop().await;
    assert!(proxy.tunnels() > before, "kinesis.proxy was not used");
    assert_eq!(
        front.accepted.load(std::sync::atomic::Ordering::SeqCst),
        proxy.tunnels()
    );

    // kinesis.proxy = "none": direct, whatever HTTPS_PROXY says.
    let before = proxy.tunnels();
    let sessions = front.accepted.load(std::sync::atomic::Ordering::SeqCst);
    let (agent, _work) = run_through(
        &emu,
        &front,
        "direct",
        "proxy = \"none\"",
        &[("HTTPS_PROXY", proxy.url())],
    )
    .await;
    agent.stop().await;
    assert_eq!(proxy.tunnels(), before, "went through the proxy");
    assert!(front.accepted.load(std::sync::atomic::Ordering::SeqCst) > sessions);

    // NO_PROXY naming the endpoint's host: direct.
    let before = proxy.tunnels();
    let (agent, _work) = run_through(
        &emu,
        &front,
        "bypass",
        "",
        &[
            ("HTTPS_PROXY", proxy.url()),
            ("NO_PROXY", "example.invalid,localhost".into()),
        ],
    )
    .await;
    agent.stop().await;
    assert_eq!(proxy.tunnels(), before, "NO_PROXY was not honoured");
    assert_eq!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
}
