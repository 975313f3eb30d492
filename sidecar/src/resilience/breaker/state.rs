//! The breaker's states, and the word that holds the current one with its generation.

/// The states of resilience4j's `CircuitBreaker.State` that Trellis uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
    Disabled = 3,
    ForcedOpen = 4,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::Disabled,
        State::ForcedOpen,
    ];

    /// The name operators see on the admin port and in logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
            State::Disabled => "DISABLED",
            State::ForcedOpen => "FORCED_OPEN",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s))
    }

    fn from_bits(b: u64) -> State {
        State::ALL[(b & 0xff) as usize % State::ALL.len()]
    }
}

/// A state word: the state in the low byte, the generation above it. Every transition bumps
/// the generation, so an outcome recorded late never counts in a later phase.
pub(super) fn pack(s: State, generation: u64) -> u64 {
    generation << 8 | s as u64
}

pub(super) fn unpack(w: u64) -> (State, u64) {
    (State::from_bits(w), w >> 8)
}

#[cfg(test)]
mod tests {
    use super::State;
    use crate::telemetry::metrics::BREAKER_STATES;

    /// The metric's `state` labels are indexed by state number, so the two orders must agree.
    #[test]
    fn each_state_labels_its_own_series() {
        for (i, s) in State::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i);
            assert_eq!(BREAKER_STATES[i], s.name().to_ascii_lowercase());
        }
    }
}
