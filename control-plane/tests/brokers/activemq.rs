//! Debian's ActiveMQ as a child process with only a STOMP connector, and the Python STOMP
//! peers that talk to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

const JAR: &str = "/usr/share/activemq/bin/activemq.jar";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/brokers/stomp_peer.py");

pub fn python() -> PathBuf {
    std::env::var_os("TRELLIS_TRACE_VENV")
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/trace-venv")),
            PathBuf::from,
        )
        .join("bin/python3")
}

/// Whether ActiveMQ (with a Java runtime) and stomp.py are here. CI installs both, so under
/// `TRELLIS_REQUIRE_SYSTEM_TESTS` a missing one fails the test instead of skipping it.
pub fn have_activemq_and_stomp() -> bool {
    let java = Command::new("java")
        .arg("-version")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let broker = java && std::path::Path::new(JAR).exists();
    let stomp = Command::new(python())
        .args(["-c", "import stomp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(broker && stomp) {
        let missing = if broker {
            format!("stomp.py in {}", python().display())
        } else {
            "ActiveMQ (apt-get install activemq)".to_string()
        };
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "{missing} is missing but TRELLIS_REQUIRE_SYSTEM_TESTS is set"
        );
        println!("skipped the ActiveMQ test: {missing} is missing");
    }
    broker && stomp
}

/// An ActiveMQ broker, in memory, reached through a relay that counts the connections it
/// is given: the app port its sidecar delivers to. Killed on drop.
pub struct ActiveMq {
    /// The relay's port: where the broker's sidecar delivers.
    pub port: u16,
    seen: Arc<AtomicUsize>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ActiveMq {
    pub async fn start() -> ActiveMq {
        let dir = tempfile::tempdir().unwrap();
        let stomp = super::support::free_addr().port();
        let base = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("activemq.xml"),
            format!(
                r#"<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" persistent="false"
          brokerName="test" dataDirectory="{base}/data" useShutdownHook="false">
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp}"/>
    </transportConnectors>
  </broker>
</beans>
"#
            ),
        )
        .unwrap();
        let child = Command::new("java")
            .args([
                "-Xmx256M",
                "-Dactivemq.home=/usr/share/activemq",
                &format!("-Dactivemq.base={base}"),
                &format!("-Dactivemq.conf={base}"),
                &format!("-Dactivemq.data={base}/data"),
                "-jar",
                JAR,
                "start",
                &format!("xbean:file:{base}/activemq.xml"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java runs");
        super::support::eventually(Duration::from_secs(60), "ActiveMQ to listen", || async {
            TcpStream::connect(("127.0.0.1", stomp))
                .await
                .ok()
                .map(drop)
        })
        .await;
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = relay.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = relay.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(("127.0.0.1", stomp)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        ActiveMq {
            port,
            seen,
            child,
            _dir: dir,
        }
    }

    /// Connections the broker was given.
    pub fn connections_seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for ActiveMq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `stomp_peer.py` process and the lines it printed. Killed on drop.
pub struct Peer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The threads that read its stdout and stderr; they end when the process's pipes close.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(python())
            .arg(SCRIPT)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l = lines.clone();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let l = lines.clone();
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        Peer {
            child,
            lines,
            readers: vec![stdout, stderr],
        }
    }

    /// Starts the peer until it says `ready`; one that cannot connect yet (certificates
    /// still on their way under STRICT) is started again, for up to 30 s.
    pub async fn start_when_ready(args: &[&str]) -> Peer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut peer = Peer::spawn(args);
            loop {
                if peer.lines().iter().any(|l| l == "ready") {
                    return peer;
                }
                if !peer.alive() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{args:?} never got ready: {:?}",
                    peer.lines()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{args:?} never got ready: {:?}",
                peer.lines()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Runs the peer to its end and returns what it printed.
    pub async fn run(args: &[&str]) -> Vec<String> {
        let mut peer = Peer::spawn(args);
        super::support::eventually(Duration::from_secs(30), "the peer to finish", || {
            let done = !peer.alive();
            async move { done.then_some(()) }
        })
        .await;
        // Every line is in once the reader threads have seen the pipes close.
        for r in std::mem::take(&mut peer.readers) {
            r.join().expect("a reader thread panicked");
        }
        peer.lines()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines that start with `prefix`, without it.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to 60 s for a line that `pred` accepts; fails at once if the peer died.
    pub async fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.lines().iter().any(|l| pred(l)) {
                return;
            }
            assert!(self.alive(), "the peer exited: {:?}", self.lines());
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such line within 60s: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
