//! `trellis-proxy init`: the init container's job. Installs the iptables nat rules that send
//! a workload's TCP through its sidecar (`rules.rs`), idempotently, for IPv4 and, where
//! ip6tables works, IPv6. `--dry-run` prints them; `--cleanup` removes them.

pub(crate) mod args;
mod rules;

pub use args::InitArgs;
use rules::{CHAINS, Family, Rule};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot run {program}: {source}; install iptables (Debian: apt-get install iptables)")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error(
        "`{command}` failed: {stderr}; are you root (CAP_NET_ADMIN) in the workload's network namespace?"
    )]
    Failed { command: String, stderr: String },
}

/// What `run` did, one line per family, for the operator.
pub fn run(a: &InitArgs) -> Result<Vec<String>, InitError> {
    let mut report = Vec::new();
    for family in [Family::V4, Family::V6] {
        if !a.dry_run && !usable(family) {
            if family == Family::V4 {
                // IPv4 is required: fail with the reason the command gives.
                run_rule(family, &rules::rule_list_nat())?;
            }
            report.push(format!(
                "{}: not available (no binary or no nat table); skipped",
                family.command()
            ));
            continue;
        }
        let cleanup = cleanup_rules(family);
        if a.dry_run {
            println!(
                "# {}: remove earlier trellis rules (errors ignored)",
                family.command()
            );
            for r in &cleanup {
                println!("{}", shell(family, r));
            }
            if !a.cleanup {
                println!("# {}: install", family.command());
                for r in rules::install(a, family) {
                    println!("{}", shell(family, &r));
                }
            }
            continue;
        }
        let removed = cleanup
            .iter()
            .filter(|r| run_rule(family, r).is_ok())
            .count();
        if a.cleanup {
            report.push(format!(
                "{}: removed ({removed} steps succeeded)",
                family.command()
            ));
            continue;
        }
        let install = rules::install(a, family);
        for r in &install {
            run_rule(family, r)?;
        }
        report.push(format!(
            "{}: installed {} rules",
            family.command(),
            install.len()
        ));
    }
    Ok(report)
}

/// Deleting the jumps (each up to a few times, in case an older run added duplicates), then
/// flushing and deleting our chains. Each step may fail when there is nothing to remove.
fn cleanup_rules(_family: Family) -> Vec<Rule> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.extend(rules::jumps("-D"));
    }
    for c in CHAINS {
        out.push(vec!["-t".into(), "nat".into(), "-F".into(), c.into()]);
    }
    for c in CHAINS {
        out.push(vec!["-t".into(), "nat".into(), "-X".into(), c.into()]);
    }
    out
}

/// Whether `family`'s command exists and its nat table can be listed.
fn usable(family: Family) -> bool {
    run_rule(family, &rules::rule_list_nat()).is_ok()
}

fn shell(family: Family, r: &Rule) -> String {
    format!("{} {}", family.command(), r.join(" "))
}

fn run_rule(family: Family, r: &Rule) -> Result<(), InitError> {
    let program = family.command();
    // -w: wait for the xtables lock rather than fail when another tool holds it.
    let out = Command::new(program)
        .arg("-w")
        .args(r)
        .output()
        .map_err(|source| InitError::Spawn { program, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InitError::Failed {
            command: shell(family, r),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::args::Cidr;
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    #[test]
    fn rules_exclude_the_proxy_and_the_listed_destinations() {
        let a = Cli::parse_from([
            "init",
            "--exclude-outbound-ports=5432,6379",
            "--exclude-outbound-cidrs=10.0.0.0/8,fd00::/8",
            "--exclude-inbound-ports=22",
            "--control-plane=10.1.2.3:15010",
        ])
        .init;
        let text: Vec<String> = rules::install(&a, Family::V4)
            .iter()
            .map(|r| r.join(" "))
            .collect();
        let has = |s: &str| text.iter().any(|t| t == s);
        assert!(has(
            "-t nat -A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN"
        ));
        assert!(has(
            "-t nat -A TRELLIS_OUTPUT -p tcp --dport 6379 -j RETURN"
        ));
        assert!(has("-t nat -A TRELLIS_OUTPUT -d 10.0.0.0/8 -j RETURN"));
        assert!(
            !text.iter().any(|t| t.contains("fd00::")),
            "v6 CIDR kept out of iptables"
        );
        assert!(has(
            "-t nat -A TRELLIS_OUTPUT -d 10.1.2.3/32 -p tcp --dport 15010 -j RETURN"
        ));
        assert!(has("-t nat -A TRELLIS_INBOUND -p tcp --dport 22 -j RETURN"));
        assert!(has(
            "-t nat -A TRELLIS_INBOUND -p tcp --dport 15000 -j RETURN"
        ));
        assert!(has(
            "-t nat -A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001"
        ));
        assert_eq!(
            text.last().unwrap(),
            "-t nat -A OUTPUT -p tcp -j TRELLIS_OUTPUT"
        );
        let uid = text.iter().position(|t| t.contains("--uid-owner")).unwrap();
        let redirect = text
            .iter()
            .position(|t| t == "-t nat -A TRELLIS_OUTPUT -j TRELLIS_REDIRECT")
            .unwrap();
        assert!(
            uid < redirect,
            "the proxy's own traffic returns before the redirect"
        );
        let v6: Vec<String> = rules::install(&a, Family::V6)
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert!(
            v6.iter()
                .any(|t| t == "-t nat -A TRELLIS_OUTPUT -d fd00::/8 -j RETURN")
        );
        assert!(
            v6.iter()
                .any(|t| t == "-t nat -A TRELLIS_OUTPUT -d ::1/128 -j RETURN")
        );
    }

    #[test]
    fn cidr_parsing_names_the_problem() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().prefix, 8);
        assert_eq!("10.0.0.1".parse::<Cidr>().unwrap().prefix, 32);
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .to_string()
                .contains("0-32")
        );
        assert!("nope".parse::<Cidr>().is_err());
    }
}
