//! trellis-control as a child process on loopback ports, and its mesh CA read back from the
//! state directory to sign test leaves.

use super::{eventually, free_addr, get};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use trellis_proto::v1::admin_client::AdminClient;
use trellis_proto::v1::{StatusRequest, StatusResponse};

/// trellis-control as a child process; killed when dropped.
pub struct ControlPlane {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub dashboard: SocketAddr,
    config: PathBuf,
    grace: &'static str,
    child: Option<Child>,
    /// The generated mesh CA lives here; it survives restarts, as on a real host.
    pub state: tempfile::TempDir,
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts with a 500ms registration grace (and warm-up).
    pub async fn start(config: &Path) -> ControlPlane {
        Self::start_with_grace(config, "500ms").await
    }

    pub async fn start_with_grace(config: &Path, grace: &'static str) -> ControlPlane {
        Self::start_with_args(config, grace, &[]).await
    }

    /// Starts with extra `trellis-control` flags, e.g. `--cert-ttl 10s`.
    pub async fn start_with_args(
        config: &Path,
        grace: &'static str,
        extra: &[&str],
    ) -> ControlPlane {
        let mut cp = ControlPlane {
            grpc: free_addr(),
            http: free_addr(),
            dashboard: free_addr(),
            config: config.to_path_buf(),
            grace,
            child: None,
            state: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cp.restart().await;
        cp
    }

    /// Starts the process again on the same ports and waits until it is ready.
    pub async fn restart(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_trellis-control"))
            .args(["--config", self.config.to_str().unwrap()])
            .args([
                "--grpc-addr",
                &self.grpc.to_string(),
                "--dashboard-addr",
                &self.dashboard.to_string(),
                "--http-addr",
                &self.http.to_string(),
            ])
            .args(["--registration-grace", self.grace])
            .arg("--state-dir")
            .arg(self.state.path())
            .args(&self.extra)
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn trellis-control");
        self.child = Some(child);
        let http = self.http;
        eventually(
            Duration::from_secs(15),
            "trellis-control to be ready",
            || async move {
                let r = get(http, "/ready").await?;
                (r.0 == 200).then_some(())
            },
        )
        .await;
    }

    /// SIGKILL: no goodbye to the proxies.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The value of the sample that `/metrics` writes as `sample` (the name with its labels,
    /// e.g. `trellis_control_resumes_total{result="delta"}`); 0 when there is none.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = get(self.http, "/metrics").await.expect("/metrics answers");
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// The mesh CA's root, which the control plane's certificate chains to.
    pub fn ca_bundle(&self) -> PathBuf {
        self.state.path().join("ca.pem")
    }

    /// A TLS channel to the gRPC port, trusting the mesh CA.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let pem = std::fs::read(self.ca_bundle()).expect("the control plane wrote its CA");
        trellis_proto::connect::endpoint(&self.url(), &pem)
            .unwrap()
            .connect()
            .await
            .expect("TLS connection to trellis-control")
    }

    pub async fn admin(&self) -> AdminClient<tonic::transport::Channel> {
        AdminClient::new(self.channel().await)
    }

    /// A join token for `namespace/name`, minted by the real `trellis-control token create`.
    pub fn token(&self, service_account: &str, ttl: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_trellis-control"))
            .args([
                "token",
                "create",
                "--service-account",
                service_account,
                "--ttl",
                ttl,
            ])
            .arg("--state-dir")
            .arg(self.state.path())
            .output()
            .expect("run trellis-control token create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub async fn status(&self) -> StatusResponse {
        self.admin()
            .await
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    /// Waits until `n` proxies are connected and each has ACKed its latest version.
    pub async fn wait_converged(&self, n: usize) -> StatusResponse {
        eventually(
            Duration::from_secs(15),
            &format!("{n} proxies to ACK their latest version"),
            || async {
                let s = self.status().await;
                let ok = s
                    .proxies
                    .iter()
                    .filter(|p| {
                        p.connected
                            && !p.latest_version.is_empty()
                            && p.acked_version == p.latest_version
                    })
                    .count();
                (ok == n && s.proxies.len() == n).then_some(s)
            },
        )
        .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The mesh CA itself, read from trellis-control's state directory, to sign test leaves.
pub fn mesh_ca(cp: &ControlPlane) -> testkit::pki::TestCa {
    let dir = cp.state.path();
    testkit::pki::TestCa::from_pem(
        &std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("ca-key.pem")).unwrap(),
    )
}

/// A leaf from the mesh CA for `spiffe_id`, valid for an hour.
pub fn mesh_leaf(cp: &ControlPlane, spiffe_id: &str) -> testkit::pki::Leaf {
    let now = std::time::SystemTime::now();
    mesh_ca(cp).spiffe(
        spiffe_id,
        now - Duration::from_secs(60),
        Duration::from_secs(3600),
    )
}
