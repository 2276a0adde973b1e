//! A moto server (Firehose and S3) on loopback, from the virtual environment
//! `.ci/test` installs, and the boto3 helper (`moto_s3.py`) that creates a
//! delivery stream into a bucket and reads the bucket back. moto writes each
//! PutRecordBatch call as one S3 object: the records' data, concatenated.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;

/// moto's virtual environment: `SHARDLINE_MOTO_VENV`, or `target/moto-venv`.
pub fn venv() -> PathBuf {
    if let Some(p) = std::env::var_os("SHARDLINE_MOTO_VENV") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv")
}

pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "moto is not installed: {} is missing; run .ci/test, which installs moto[server] there",
        path.display()
    );
    path
}

/// One object of a bucket, as read back.
#[derive(Debug, Clone)]
pub struct S3Object {
    pub key: String,
    pub data: Bytes,
}

/// A running `moto_server`; killed on drop.
pub struct Moto {
    pub endpoint: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it accepts connections.
    pub async fn start() -> Moto {
        let server = venv_bin("moto_server");
        for _ in 0..5 {
            // A free port, given back for moto to take: another process could take
            // it in between, then moto exits and the next port is tried.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap();
            let mut moto = Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                child,
                log,
            };
            if moto.wait_listening(port).await {
                return moto;
            }
        }
        panic!("moto_server did not start on any of five ports");
    }

    /// Waits for the port to accept; false if moto exited (the port was taken).
    async fn wait_listening(&mut self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server is not answering on {}:\n{}",
                self.endpoint,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates bucket `bucket` and a Direct PUT delivery stream `name` writing
    /// into it (ExtendedS3 destination).
    pub async fn create_delivery_stream(&self, bucket: &str, name: &str) {
        self.helper(&["setup", bucket, name]).await;
    }

    /// Every object of `bucket`, sorted by key.
    pub async fn objects(&self, bucket: &str) -> Vec<S3Object> {
        let out = self.helper(&["read", bucket]).await;
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
        listed
            .into_iter()
            .map(|o| S3Object {
                key: o["key"].as_str().unwrap().to_owned(),
                data: base64::engine::general_purpose::STANDARD
                    .decode(o["data"].as_str().unwrap())
                    .unwrap()
                    .into(),
            })
            .collect()
    }

    /// Runs `moto_s3.py ENDPOINT args…` with moto's Python; returns its stdout.
    async fn helper(&self, args: &[&str]) -> Vec<u8> {
        let python = venv_bin("python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/util/moto_s3.py");
        let mut c = Command::new(python);
        c.arg(script)
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null());
        let what = args.join(" ");
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "moto_s3.py {what} failed: {}\nmoto's log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        out.stdout
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
