//! The demo's child processes: each is `trellis __child ...` with its stdin a pipe the demo
//! holds, its output in a log file, and its PID recorded. Dropping `Procs` stops them all.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, ChildStdin, Command};

pub struct Proc {
    pub name: String,
    child: Child,
    /// Held open; closing it tells the child to exit (child.rs).
    stdin: Option<ChildStdin>,
}

pub struct Procs {
    exe: PathBuf,
    logs: PathBuf,
    pub running: Vec<Proc>,
    /// Every PID ever started, for the report and the check that none outlives the demo.
    pub started: Vec<(String, u32)>,
}

impl Procs {
    pub fn new(logs: &Path) -> anyhow::Result<Procs> {
        let exe = std::env::current_exe().context("cannot find the trellis binary to re-run")?;
        Ok(Procs {
            exe,
            logs: logs.to_path_buf(),
            running: Vec::new(),
            started: Vec::new(),
        })
    }

    /// Starts `trellis __child ARGS` as `name`, logging to `<logs>/<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let mut child = Command::new(&self.exe)
            .arg("__child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            // Its own process group, so a terminal's Ctrl-C reaches only the demo, which then
            // reads the final figures before it stops the children itself.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().context("a just-started child has a pid")?;
        let stdin = child.stdin.take();
        self.running.push(Proc {
            name: name.to_string(),
            child,
            stdin,
        });
        self.started.push((name.to_string(), pid));
        Ok(pid)
    }

    /// Kills `name` at once (SIGKILL) and reaps it: the way a crashed instance goes.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .running
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no running process {name}"))?;
        let mut p = self.running.remove(i);
        p.child.kill().await?;
        Ok(())
    }

    /// Names of children that have exited on their own, with their status.
    pub fn exited(&mut self) -> Vec<String> {
        self.running
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status})", p.name)),
                _ => None,
            })
            .collect()
    }

    /// Stops every child: close its stdin so it exits by itself, then kill what is left.
    pub async fn stop_all(&mut self) {
        for p in &mut self.running {
            p.stdin.take();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        for p in &mut self.running {
            if tokio::time::timeout_at(deadline, p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
        self.running.clear();
    }

    /// `(name, pid)` of every running child.
    pub fn pids(&self) -> Vec<(String, u32)> {
        (self.running.iter())
            .filter_map(|p| Some((p.name.clone(), p.child.id()?)))
            .collect()
    }

    pub fn log_dir(&self) -> &Path {
        &self.logs
    }
}
