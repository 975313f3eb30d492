//! The snapshot's types as the `trellis.v1` messages of proto/trellis/v1/resources.proto, one
//! file per resource kind: `From` a snapshot type, and `TryFrom` its message back with an
//! error that names the field that is missing or invalid.

mod cluster;
mod enums;
mod gateway;
mod mesh;
mod resilience;
mod route;
mod service;

use std::fmt;
use std::time::Duration;

/// Why a message does not describe a valid snapshot part: the path to the field, then what
/// is wrong with it, e.g. `endpoint 3: address "x" is not ip:port`.
#[derive(Debug, thiserror::Error)]
#[error("{}{field} {problem}", Path(&self.path))]
pub struct WireError {
    /// Outermost first, items by position: `port 0`, `route 2`, ...
    path: Vec<String>,
    field: &'static str,
    problem: Problem,
}

/// What is wrong with one field.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("is missing")]
    Missing,
    #[error("is unspecified")]
    Unspecified,
    #[error(
        "has the value {0}, which this proxy does not know; upgrade it to the control plane's release"
    )]
    UnknownEnum(i32),
    #[error("{0:?} is not ip:port")]
    NotSocketAddr(String),
    #[error("{0:?} is not an IP address")]
    NotIp(String),
    #[error("{value} is out of range (at most {max})")]
    OutOfRange { value: u64, max: u64 },
    #[error("is not a duration (negative, or too long)")]
    Duration,
    #[error("{0}")]
    Invalid(String),
}

struct Path<'a>(&'a [String]);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "{p}: ")?;
        }
        Ok(())
    }
}

// === impl WireError ===

impl WireError {
    pub(crate) fn new(field: &'static str, problem: Problem) -> WireError {
        WireError {
            path: Vec::new(),
            field,
            problem,
        }
    }

    /// The same error inside `outer` (`endpoint 3`, `resilience`).
    pub(crate) fn at(mut self, outer: impl fmt::Display) -> WireError {
        self.path.insert(0, outer.to_string());
        self
    }

    /// What is wrong, without the path.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

// === Helpers both ways ===

/// Snapshot items as messages.
pub(crate) fn list<'a, T: 'a, U: From<&'a T>>(items: &'a [T]) -> Vec<U> {
    items.iter().map(U::from).collect()
}

/// Messages as snapshot items; an error names the item by its position (`endpoint 3`).
pub(crate) fn each<T, U>(items: Vec<T>, what: &str) -> Result<Vec<U>, WireError>
where
    U: TryFrom<T, Error = WireError>,
{
    // Sized up front: collecting into a `Result` cannot see the length, so its `Vec` grows
    // by doubling and keeps up to twice the room; a proxy holds these lists (the endpoints of
    // every cluster) for as long as the snapshot lives.
    let mut out = Vec::with_capacity(items.len());
    for (i, x) in items.into_iter().enumerate() {
        out.push(U::try_from(x).map_err(|e| e.at(format_args!("{what} {i}")))?);
    }
    Ok(out)
}

/// A snapshot enum as its wire value.
pub(crate) fn enum_i32<E, P: From<E> + Into<i32>>(e: E) -> i32 {
    P::from(e).into()
}

/// A message field that must be set.
pub(crate) fn required<T>(v: Option<T>, field: &'static str) -> Result<T, WireError> {
    v.ok_or_else(|| WireError::new(field, Problem::Missing))
}

/// A TCP port (or another u16: a status code), carried as a uint32.
pub(crate) fn u16_of(v: u32, field: &'static str) -> Result<u16, WireError> {
    u16::try_from(v).map_err(|_| {
        WireError::new(
            field,
            Problem::OutOfRange {
                value: v.into(),
                max: u16::MAX.into(),
            },
        )
    })
}

pub(crate) fn duration_to_wire(d: &Option<Duration>) -> Option<prost_types::Duration> {
    d.map(|d| prost_types::Duration {
        // No config duration comes near i64::MAX seconds; saturate rather than wrap.
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}

pub(crate) fn duration_from_wire(
    d: Option<prost_types::Duration>,
    field: &'static str,
) -> Result<Option<Duration>, WireError> {
    d.map(|d| Duration::try_from(d).map_err(|_| WireError::new(field, Problem::Duration)))
        .transpose()
}
