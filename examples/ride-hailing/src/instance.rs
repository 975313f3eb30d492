//! Which role a demo process plays, and where it listens and calls out.

/// The five services of the ride-hailing app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Passenger,
    Trip,
    Driver,
    Billing,
    Notification,
}

/// A role name that is none of the five.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}; allowed: passenger, trip, driver, billing, notification")]
pub struct UnknownRole(String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Ok(match s {
            "passenger" => Role::Passenger,
            "trip" => Role::Trip,
            "driver" => Role::Driver,
            "billing" => Role::Billing,
            "notification" => Role::Notification,
            _ => return Err(UnknownRole(s.to_string())),
        })
    }
}

/// One running instance of a role.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub role: Role,
    /// The workload name, e.g. `driver-2`; every answer carries it in `x-served-by`.
    pub name: String,
    /// `v1`, `v2`: billing's canary answers with its version.
    pub version: String,
    pub listen: std::net::SocketAddr,
    /// This instance's sidecar outbound listener, through which it calls other services.
    pub sidecar: std::net::SocketAddr,
}
