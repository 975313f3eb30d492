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

    /// The `state` label value of `trellis_circuit_breaker_state` (resilience4j's metric form).
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
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
