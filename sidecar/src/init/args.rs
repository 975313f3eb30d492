//! The flags of `trellis-proxy init`, and the CIDR type its exclusions are written in.

use std::net::{IpAddr, SocketAddr};

/// The flags of `trellis-proxy init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The UID the proxy runs as; its own connections are never redirected.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The proxy's outbound listener port.
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// The proxy's inbound listener port.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// The proxy's admin port, reached directly (probes, metrics).
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    /// Inbound destination ports that go straight to the app, e.g. 22,9100.
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports that bypass the proxy.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations that bypass the proxy, e.g. 169.254.169.254/32,10.0.0.0/8.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// The control plane's IP:PORT, reached directly (its traffic must not depend on the proxy).
    #[arg(long, value_delimiter = ',')]
    pub control_plane: Vec<SocketAddr>,
    /// Print the commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every rule and chain this command installs, and nothing else.
    #[arg(long)]
    pub cleanup: bool,
}

/// A CIDR from `--exclude-outbound-cidrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (ip, len) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = ip.parse().map_err(|_| CidrError::NotCidr(s.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix(s.to_string(), max))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A `--exclude-outbound-cidrs` value that is not a CIDR.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not a CIDR like 10.0.0.0/8 or fd00::/8")]
    NotCidr(String),
    #[error("{0:?}: the prefix length must be 0-{1}")]
    Prefix(String, u8),
}
