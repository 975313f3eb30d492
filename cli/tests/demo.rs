//! `trellis demo` end to end, as CI runs it: the real binary starts the control plane, every
//! service with its sidecar and the gateway as child processes, runs every scenario briefly,
//! and writes its JSON report. The test checks the report's figures and that no process the
//! demo started outlives it, whether it ends by `--duration` or is SIGKILLed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `pid` is still a demo child: alive (not a zombie) and running `trellis __child`.
fn demo_child_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name: "123 (trellis) S ...".
    let state = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start())
        .unwrap_or("");
    if state.starts_with('Z') || state.starts_with('X') {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__child"))
}

/// PIDs whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn wait_all_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| demo_child_alive(*p))
            .collect();
        if alive.is_empty() || start.elapsed() > within {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_scenario_does_what_the_report_says_and_nothing_outlives_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--no-tui", "--duration", "50s", "--report"])
        .arg(&report_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    assert!(stdout.contains("== Trellis demo summary"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let ctx = format!("report: {r:#}\nstdout:\n{stdout}");

    assert_eq!(r["skipped"], serde_json::json!([]), "{ctx}");

    // Steady state: traffic flowed, and none of it failed.
    assert!(r["steady"]["requests"].as_u64().unwrap() >= 50, "{ctx}");
    assert_eq!(r["steady"]["errors"], 0, "{ctx}");

    // Canary: the billing-v2 share followed 90/10 -> 50/50 -> 0/100.
    let shares: Vec<f64> = r["canary"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["v2Percent"].as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), 3, "{ctx}");
    assert!(
        shares[0] < 30.0 && (25.0..=75.0).contains(&shares[1]) && shares[2] > 99.9,
        "{ctx}"
    );
    assert_eq!(r["canary"]["moved"], true, "{ctx}");

    // Cascade: trip's breaker for billing opened, and closed again once billing healed;
    // trip deferred charges meanwhile, so passengers saw no errors.
    let c = &r["cascade"];
    assert_eq!(c["breakerOpened"], true, "{ctx}");
    assert_eq!(c["breakerClosed"], true, "{ctx}");
    assert!(
        c["tripP99SlowMs"].as_f64().unwrap() > c["tripP50OpenMs"].as_f64().unwrap(),
        "{ctx}"
    );
    assert!(c["clientErrors"].as_u64().unwrap() <= 5, "{ctx}");

    // Outage: the killed driver was ejected, retries hid it, and it rejoined after restart.
    let o = &r["outage"];
    assert_eq!(o["ejected"], true, "{ctx}");
    assert!(o["ejections"].as_f64().unwrap() >= 1.0, "{ctx}");
    assert!(o["clientRequests"].as_u64().unwrap() >= 50, "{ctx}");
    assert!(o["clientErrors"].as_u64().unwrap() <= 5, "{ctx}");
    assert_eq!(o["rejoined"], true, "{ctx}");

    // Every process the demo started is gone.
    let pids: Vec<u32> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    assert!(pids.len() >= 18, "{ctx}");
    assert_eq!(
        wait_all_gone(&pids, Duration::from_secs(5)),
        Vec::<u32>::new(),
        "{ctx}"
    );

    // One booking, followed by its trace id through every proxy's access log: the gateway,
    // then each service's caller (outbound) and the service's own sidecar (inbound). The
    // apps carried the trace context on, so the hops share the id the demo sent.
    let t = &r["trace"];
    assert_eq!(t["status"], 200, "{ctx}");
    assert_eq!(t["traceId"].as_str().unwrap().len(), 32, "{ctx}");
    let hops = t["hops"].as_array().unwrap();
    let has = |direction: &str, service: &str| {
        hops.iter().any(|h| {
            h["direction"] == direction
                && h["destinationService"] == format!("{service}.rides")
                && h["status"] == 200
        })
    };
    assert!(has("gateway", "passenger"), "{ctx}");
    for service in ["trip", "driver", "billing", "notification"] {
        assert!(has("outbound", service), "{service} outbound\n{ctx}");
    }
    for service in ["passenger", "trip", "driver", "billing", "notification"] {
        assert!(has("inbound", service), "{service} inbound\n{ctx}");
    }
    assert!(stdout.contains("one booking, trace id"), "{stdout}");

    // Deny: passenger -> billing is refused by billing's AuthorizationPolicy with 403s.
    let d = &r["deny"];
    assert!(d["calls"].as_u64().unwrap() > 0, "{ctx}");
    assert_eq!(
        d["forbidden"], d["calls"],
        "every direct passenger -> billing call gets 403\n{ctx}"
    );
    assert_eq!(d["trellisErrors"]["unauthorized"], d["calls"], "{ctx}");
}

#[test]
fn children_die_with_a_sigkilled_demo() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--no-tui", "--scenario", "deny"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("mesh ready"));
    assert!(ready.is_some(), "the demo never got ready");
    let children = children_of(demo.id());
    assert!(children.len() >= 18, "children: {children:?}");
    // The gateway's HTTPS listener, with the curl command the demo prints, run as printed:
    // HTTP/2 over TLS, verified against the demo's own CA.
    let curl = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("HTTPS too: ").map(|(_, c)| c.to_string()))
        .expect("the demo prints its HTTPS curl command");
    let args: Vec<&str> = curl.split_whitespace().skip(1).collect();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--max-time",
            "10",
        ])
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 2",
        "{curl}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(children.iter().all(|p| demo_child_alive(*p)));
    demo.kill().unwrap(); // SIGKILL: no cleanup code of the demo runs
    demo.wait().unwrap();
    assert_eq!(
        wait_all_gone(&children, Duration::from_secs(10)),
        Vec::<u32>::new(),
        "children outlived a SIGKILLed demo"
    );
}
