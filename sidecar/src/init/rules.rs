//! The nat rules `trellis-proxy init` installs, as iptables argument lists, one address
//! family at a time. docs/interception.md explains each rule.

use super::args::InitArgs;
use std::net::IpAddr;

/// Inbound TCP enters here from PREROUTING.
pub const INBOUND: &str = "TRELLIS_INBOUND";
/// Redirects to the inbound listener.
pub const IN_REDIRECT: &str = "TRELLIS_IN_REDIRECT";
/// The workload's own outbound TCP enters here from OUTPUT.
pub const OUTPUT: &str = "TRELLIS_OUTPUT";
/// Redirects to the outbound listener.
pub const REDIRECT: &str = "TRELLIS_REDIRECT";
pub const CHAINS: [&str; 4] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT];

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// One iptables invocation, without the program name.
pub type Rule = Vec<String>;

fn rule(parts: &[&str]) -> Rule {
    let mut r = vec!["-t".to_string(), "nat".to_string()];
    r.extend(parts.iter().map(|s| s.to_string()));
    r
}

/// The jumps from the built-in chains into ours, with `op` `-A` (add) or `-D` (delete):
/// cleanup deletes exactly what install added.
pub fn jumps(op: &str) -> [Rule; 2] {
    [
        rule(&[op, "PREROUTING", "-p", "tcp", "-j", INBOUND]),
        rule(&[op, "OUTPUT", "-p", "tcp", "-j", OUTPUT]),
    ]
}

/// Every rule for `family`, in the order they must be added.
pub fn install(a: &InitArgs, family: Family) -> Vec<Rule> {
    let mut out: Vec<Rule> = CHAINS.iter().map(|c| rule(&["-N", c])).collect();
    let (inbound, outbound) = (a.inbound_port.to_string(), a.outbound_port.to_string());
    out.push(rule(&[
        "-A",
        IN_REDIRECT,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &inbound,
    ]));
    out.push(rule(&[
        "-A",
        REDIRECT,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &outbound,
    ]));

    // Inbound: everything but the proxy's own ports and the excluded ones goes to 15006.
    let mut skip_in = vec![a.inbound_port, a.admin_port];
    skip_in.extend(&a.exclude_inbound_ports);
    skip_in.sort_unstable();
    skip_in.dedup();
    for port in skip_in {
        let p = port.to_string();
        out.push(rule(&[
            "-A", INBOUND, "-p", "tcp", "--dport", &p, "-j", "RETURN",
        ]));
    }
    out.push(rule(&["-A", INBOUND, "-p", "tcp", "-j", IN_REDIRECT]));

    // Outbound: the proxy's own connections first, or it would loop into itself.
    let uid = a.proxy_uid.to_string();
    out.push(rule(&[
        "-A",
        OUTPUT,
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ]));
    // The app talking to itself on localhost is not mesh traffic.
    out.push(rule(&[
        "-A",
        OUTPUT,
        "-d",
        family.loopback(),
        "-j",
        "RETURN",
    ]));
    for cp in a.control_plane.iter().filter(|cp| family.holds(cp.ip())) {
        let (ip, port) = (host_cidr(cp.ip()), cp.port().to_string());
        out.push(rule(&[
            "-A", OUTPUT, "-d", &ip, "-p", "tcp", "--dport", &port, "-j", "RETURN",
        ]));
    }
    for port in &a.exclude_outbound_ports {
        let p = port.to_string();
        out.push(rule(&[
            "-A", OUTPUT, "-p", "tcp", "--dport", &p, "-j", "RETURN",
        ]));
    }
    for cidr in a
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| family.holds(c.addr))
    {
        out.push(rule(&[
            "-A",
            OUTPUT,
            "-d",
            &cidr.to_string(),
            "-j",
            "RETURN",
        ]));
    }
    out.push(rule(&["-A", OUTPUT, "-j", REDIRECT]));

    // Last, so no packet meets a half-built chain.
    out.extend(jumps("-A"));
    out
}

/// `-t nat -L -n`: lists the nat table, to check that the family works here.
pub fn rule_list_nat() -> Rule {
    rule(&["-L", "-n"])
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}
