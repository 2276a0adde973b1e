//! A CONNECT proxy and a TLS front for the emulator, both on 127.0.0.1: the
//! agent reaches an `https://` endpoint only through a tunnel the proxy counts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP proxy that takes `CONNECT host:port` (loopback targets only) and
/// refuses anything else.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    /// Tunnels opened.
    pub tunnels: Arc<AtomicUsize>,
    /// Requests refused (not CONNECT, or not to loopback).
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (t, r) = (tunnels.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (t, r) = (t.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = tunnel(conn, &t, &r).await;
                });
            }
        });
        ConnectProxy {
            addr,
            tunnels,
            refused,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tunnel(
    mut conn: TcpStream,
    tunnels: &AtomicUsize,
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let target = match (words.next(), words.next()) {
        (Some("CONNECT"), Some(t)) => t.to_owned(),
        _ => {
            refused.fetch_add(1, Ordering::SeqCst);
            return conn
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    };
    let Some((host, port)) = target.rsplit_once(':') else {
        refused.fetch_add(1, Ordering::SeqCst);
        return conn
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
    };
    // Only this machine's loopback: the test never reaches out.
    if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        refused.fetch_add(1, Ordering::SeqCst);
        return conn
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await;
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap_or(0))).await?;
    tunnels.fetch_add(1, Ordering::SeqCst);
    conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

/// TLS in front of a plain TCP service, with a certificate for `localhost` from
/// a CA made for the test (by `openssl`): `ca` is the PEM file a client trusts.
pub struct TlsFront {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    /// TLS sessions accepted.
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(upstream: SocketAddr, dir: &Path) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        make_certs(dir);
        let certs = vec![
            CertificateDer::from_pem_file(dir.join("leaf.pem")).unwrap(),
            CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap(),
        ];
        let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, a) = (acceptor.clone(), a.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else {
                        return;
                    };
                    a.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        TlsFront {
            addr,
            ca: dir.join("ca.pem"),
            accepted,
            task,
        }
    }

    /// The endpoint URL (by name: the certificate is for `localhost`).
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A CA and a `localhost` leaf certificate signed by it.
fn make_certs(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian's openssl package) makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=shardline test CA",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}
