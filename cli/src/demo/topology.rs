//! The demo's processes and where they listen: the control plane, one app and one sidecar
//! per service instance, and the gateway, all on free loopback ports.

use super::client::Http;
use super::procs::Procs;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One service instance: its app and its sidecar.
pub struct Instance {
    pub name: String,
    pub role: &'static str,
    pub version: &'static str,
    pub app: SocketAddr,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

pub struct Topology {
    pub dir: PathBuf,
    /// The mesh CA's state directory: `ca.pem` is the trust bundle every proxy gets.
    pub state: PathBuf,
    pub mesh: PathBuf,
    pub grpc: SocketAddr,
    pub cp_http: SocketAddr,
    /// The control plane's dashboard.
    pub dashboard: SocketAddr,
    pub instances: Vec<Instance>,
    /// The gateway proxy: its listeners for clients (HTTP and HTTPS), and its admin port.
    pub gateway: SocketAddr,
    pub gateway_https: SocketAddr,
    pub gateway_admin: SocketAddr,
    /// The root the HTTPS listener's certificate chains to, for `curl --cacert`.
    pub gateway_ca: PathBuf,
    /// The gateway proxy's outbound and inbound listeners, which the demo does not use.
    gateway_spare: [SocketAddr; 2],
    /// The lifetime of the proxies' certificates; they renew at about half of it. An hour
    /// for the demo; the soak makes it short, so that certificates rotate under load.
    pub cert_ttl: Duration,
    /// Whether the proxies write an access log (the demo's trace summary reads it; the soak's
    /// million requests would fill the disk with it).
    pub access_log: bool,
}

/// `(name, role, version)` of every instance; driver runs three, billing two versions.
const INSTANCES: &[(&str, &str, &str)] = &[
    ("passenger-0", "passenger", "v1"),
    ("trip-0", "trip", "v1"),
    ("driver-0", "driver", "v1"),
    ("driver-1", "driver", "v1"),
    ("driver-2", "driver", "v1"),
    ("billing-v1-0", "billing", "v1"),
    ("billing-v2-0", "billing", "v2"),
    ("notification-0", "notification", "v1"),
];

/// Free loopback ports, all held until every one is chosen so that none repeats.
///
/// They come from below the kernel's ephemeral port range when there is room. The children
/// bind them only later, one by one, and meanwhile the demo's own connections take source
/// ports from the ephemeral range: a port chosen there could be taken before its sidecar
/// binds it (seen in CI: "cannot listen on 127.0.0.1:40095 (outbound): Address already in
/// use"). No source port or `bind(:0)` is ever given out below the range.
fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(ports) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .and_then(|start| below_ephemeral(n, start))
    {
        return Ok(ports);
    }
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot bind a loopback port")?;
    Ok(held
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?)
}

/// `n` consecutive free ports in [10000, `ephemeral_start`), or `None` if there is no room
/// or no free block. The first block tried depends on the process id, so that two demos
/// starting at once try different blocks.
fn below_ephemeral(n: usize, ephemeral_start: u16) -> Option<Vec<SocketAddr>> {
    const LOW: u32 = 10_000;
    let n32 = u32::try_from(n).ok()?.max(1);
    let blocks = u32::from(ephemeral_start).checked_sub(LOW)? / n32;
    if blocks == 0 {
        return None;
    }
    let first = std::process::id() % blocks;
    (0..blocks.min(64)).find_map(|k| {
        let base = LOW + (first + k) % blocks * n32;
        let held: Vec<std::net::TcpListener> = (base..base + n32)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", u16::try_from(p).ok()?)).ok())
            .collect::<Option<_>>()?;
        held.iter().map(|l| l.local_addr().ok()).collect()
    })
}

/// The gateway's HTTPS certificate, issued here as an operator's CA would: a root of the
/// demo's own (valid for a day, written for `curl --cacert`) and a leaf for
/// `rides.example.com`, `localhost` and 127.0.0.1. Returns the root's PEM and the Secret
/// document holding the leaf and its key.
fn gateway_certificate() -> anyhow::Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let day = |d: u64| std::time::SystemTime::now() + Duration::from_secs(d * 86_400);
    let root_key = KeyPair::generate()?;
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "Trellis demo gateway CA");
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    root.not_before = (std::time::SystemTime::now() - Duration::from_secs(300)).into();
    root.not_after = day(1).into();
    let root_cert = root.self_signed(&root_key)?;
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        "rides.example.com".to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "rides.example.com");
    leaf.not_before = (std::time::SystemTime::now() - Duration::from_secs(300)).into();
    leaf.not_after = day(1).into();
    let leaf = leaf.signed_by(&key, &issuer)?;
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    let secret = format!(
        "# The ride gateway's HTTPS certificate, issued by `trellis demo` at start.\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: ride-gateway-cert, namespace: rides}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(&leaf.pem()),
        indent(&key.serialize_pem())
    );
    Ok((root_cert.pem(), secret))
}

/// `yaml` with `block` added to the Mesh document's spec, after its `mtls:` line.
fn with_tracing(yaml: &str, block: &str) -> anyhow::Result<String> {
    const AFTER: &str = "  mtls: {mode: STRICT}";
    let at = (yaml.find(AFTER))
        .and_then(|i| yaml[i..].find('\n').map(|n| i + n + 1))
        .ok_or_else(|| {
            anyhow::anyhow!("the demo's mesh has no `{AFTER}` line to add tracing after")
        })?;
    Ok(format!("{}{block}{}", &yaml[..at], &yaml[at..]))
}

impl Topology {
    /// Chooses ports and writes the mesh file into `dir`; `tracing` is a `tracing:` block for
    /// the Mesh's spec (`--otlp`).
    pub fn plan(dir: &Path, tracing: Option<&str>) -> anyhow::Result<Topology> {
        let mut ports = free_ports(8 + INSTANCES.len() * 4)?.into_iter();
        let mut next = || ports.next().expect("enough ports were bound");
        // A folder: the example's mesh.yaml, and the Secret with the gateway's certificate.
        let mesh = dir.join("mesh");
        std::fs::create_dir_all(&mesh)?;
        let yaml = match tracing {
            None => trellis_demo_app::MESH_YAML.to_string(),
            Some(t) => with_tracing(trellis_demo_app::MESH_YAML, t)?,
        };
        std::fs::write(mesh.join("mesh.yaml"), yaml)?;
        let gateway_ca = dir.join("gateway-ca.pem");
        let (ca_pem, secret) = gateway_certificate()?;
        std::fs::write(&gateway_ca, ca_pem)?;
        std::fs::write(mesh.join("gateway-cert.yaml"), secret)?;
        let (grpc, cp_http, gateway, gateway_admin) = (next(), next(), next(), next());
        let gateway_https = next();
        let gateway_spare = [next(), next()];
        let dashboard = next();
        let instances = INSTANCES
            .iter()
            .map(|&(name, role, version)| Instance {
                name: name.to_string(),
                role,
                version,
                app: next(),
                outbound: next(),
                inbound: next(),
                admin: next(),
            })
            .collect();
        Ok(Topology {
            dir: dir.to_path_buf(),
            state: dir.join("state"),
            mesh,
            grpc,
            cp_http,
            dashboard,
            instances,
            gateway,
            gateway_https,
            gateway_admin,
            gateway_ca,
            gateway_spare,
            cert_ttl: Duration::from_secs(3600),
            access_log: true,
        })
    }

    pub fn instance(&self, name: &str) -> &Instance {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .expect("a demo instance name")
    }

    pub fn ca_bundle(&self) -> PathBuf {
        self.state.join("ca.pem")
    }

    /// Generates the mesh CA and writes a join token for each service account, as
    /// `trellis-control token create --service-account rides/SA` would.
    fn issue_tokens(&self) -> anyhow::Result<()> {
        use trellis_control::identity::{ca, proof::ServiceAccount, token::JoinTokens};
        let ca = ca::Ca::load(&ca::CaSource::StateDir(self.state.clone()))
            .context("cannot create the demo's mesh CA")?;
        let tokens = JoinTokens::new(ca.token_key_material());
        let accounts = self
            .instances
            .iter()
            .map(|i| i.role)
            .chain(["ride-gateway"]);
        for sa in accounts {
            let token = tokens.mint(
                &ServiceAccount {
                    namespace: "rides".into(),
                    name: sa.into(),
                },
                Duration::from_secs(24 * 3600),
            );
            std::fs::write(self.token_file(sa), token)?;
        }
        Ok(())
    }

    fn token_file(&self, service_account: &str) -> PathBuf {
        self.dir.join(format!("{service_account}.token"))
    }

    /// Starts the control plane, then every app, sidecar and the gateway.
    pub fn start(&self, procs: &mut Procs) -> anyhow::Result<()> {
        self.issue_tokens()?;
        self.start_control(procs)?;
        for i in &self.instances {
            self.start_app(procs, i)?;
            self.start_sidecar(procs, i)?;
        }
        let [o, inb] = self.gateway_spare;
        let boot = self.dir.join("ride-gateway.bootstrap.yaml");
        std::fs::write(
            &boot,
            format!(
                "workload: {{name: ride-gateway-0, namespace: rides, serviceAccount: ride-gateway, labels: {{app: ride-gateway}}}}\n\
                 listeners: {{outbound: {o}, inbound: {inb}, admin: {a}}}\n\
                 app: {{address: 127.0.0.1}}\n\
                 controlPlane: {{address: https://{cp}, caBundle: {ca}, tokenFile: {t}}}\n\
                 gateway: {{name: ride-gateway, listen: {{http: {g}, https: {gs}}}}}\n\
                 accessLog: {log}\n",
                log = self.access_log,
                a = self.gateway_admin,
                cp = self.grpc,
                ca = self.ca_bundle().display(),
                t = self.token_file("ride-gateway").display(),
                g = self.gateway,
                gs = self.gateway_https,
            ),
        )?;
        procs.spawn(
            "ride-gateway",
            &[
                "proxy".into(),
                "--bootstrap".into(),
                boot.display().to_string(),
            ],
        )?;
        Ok(())
    }

    /// Starts (or restarts) the control plane, as `control-plane`.
    pub fn start_control(&self, procs: &mut Procs) -> anyhow::Result<u32> {
        procs.spawn(
            "control-plane",
            &[
                "control".into(),
                "--config".into(),
                self.mesh.display().to_string(),
                "--grpc-addr".into(),
                self.grpc.to_string(),
                "--http-addr".into(),
                self.cp_http.to_string(),
                "--dashboard-addr".into(),
                self.dashboard.to_string(),
                // Short, so a restarted instance's old registration does not linger.
                "--registration-grace".into(),
                "1s".into(),
                "--state-dir".into(),
                self.state.display().to_string(),
                "--cert-ttl".into(),
                format!("{}s", self.cert_ttl.as_secs()),
            ],
        )
    }

    /// Starts (or restarts) one instance's sidecar, as `<name>.sidecar`.
    pub fn start_sidecar(&self, procs: &mut Procs, i: &Instance) -> anyhow::Result<u32> {
        let boot = self.dir.join(format!("{}.bootstrap.yaml", i.name));
        std::fs::write(
            &boot,
            format!(
                "workload: {{name: {n}, namespace: rides, serviceAccount: {r}, labels: {{app: {r}, version: {v}}}}}\n\
                 listeners: {{outbound: {o}, inbound: {inb}, admin: {a}}}\n\
                 app: {{address: 127.0.0.1, ports: {{http: {p}}}}}\n\
                 controlPlane: {{address: https://{cp}, caBundle: {ca}, tokenFile: {t}}}\n\
                 accessLog: {log}\n",
                log = self.access_log,
                n = i.name,
                r = i.role,
                v = i.version,
                o = i.outbound,
                inb = i.inbound,
                a = i.admin,
                p = i.app.port(),
                cp = self.grpc,
                ca = self.ca_bundle().display(),
                t = self.token_file(i.role).display(),
            ),
        )?;
        procs.spawn(
            &format!("{}.sidecar", i.name),
            &[
                "proxy".into(),
                "--bootstrap".into(),
                boot.display().to_string(),
            ],
        )
    }

    /// Starts (or restarts) one instance's app.
    pub fn start_app(&self, procs: &mut Procs, i: &Instance) -> anyhow::Result<u32> {
        procs.spawn(
            &i.name,
            &[
                "app".into(),
                "--role".into(),
                i.role.into(),
                "--name".into(),
                i.name.clone(),
                "--app-version".into(),
                i.version.into(),
                "--listen".into(),
                i.app.to_string(),
                "--sidecar".into(),
                i.outbound.to_string(),
            ],
        )
    }

    /// Waits until every sidecar is ready and a ride booked through the gateway succeeds.
    pub async fn wait_ready(&self, http: &Http, procs: &mut Procs) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let admins: Vec<SocketAddr> = self
            .instances
            .iter()
            .map(|i| i.admin)
            .chain([self.gateway_admin])
            .collect();
        loop {
            let exited = procs.exited();
            if !exited.is_empty() {
                bail!("{} exited during start-up", exited.join(", "));
            }
            let mut ready = true;
            for a in &admins {
                ready &= http.get(*a, "/ready").await.is_ok_and(|r| r.status == 200);
            }
            if ready {
                let ride = http
                    .send(
                        http::Method::POST,
                        self.gateway,
                        "rides.example.com",
                        "/api/rides",
                        Duration::from_secs(3),
                    )
                    .await;
                if ride.is_ok_and(|r| r.status == 200) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the mesh did not become ready within 60s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports = below_ephemeral(38, 32768).expect("a free block below 32768");
        assert_eq!(ports.len(), 38);
        let distinct: std::collections::BTreeSet<u16> = ports.iter().map(|a| a.port()).collect();
        assert_eq!(distinct.len(), 38);
        assert!(
            ports.iter().all(|a| (10_000..32768).contains(&a.port())),
            "{ports:?}"
        );
        // Released on return: a child can bind each.
        for a in &ports {
            std::net::TcpListener::bind(a).unwrap_or_else(|e| panic!("{a}: {e}"));
        }
        // No room below the range: none.
        assert_eq!(below_ephemeral(38, 10_020), None);
    }
}
