//! Passive Kafka protocol tap for a TCP proxy, for per-API-key metrics.
//!
//! The tap is shown the bytes of one Kafka connection as the proxy forwards them, in order and
//! in chunks of any size, and reports requests, matched responses and framing failures. It
//! never holds or changes the forwarded bytes: between calls it keeps at most 8 bytes of the
//! field it is reading and skips the rest of each frame by counting. The events do not depend
//! on how the bytes are split into chunks. Nothing is allocated per frame; the only heap
//! store is the in-flight queue, which grows to at most [`MAX_IN_FLIGHT`] entries of 16 bytes.

use std::collections::VecDeque;

/// Produce's API key: with `acks=0` it gets no response.
pub const PRODUCE: i16 = 0;

/// The largest frame size (bytes after the 4-byte size field) accepted as Kafka.
pub const MAX_FRAME: i32 = 100 * 1024 * 1024;
/// The most requests remembered while they wait for a response; a new request arriving
/// when the queue is full pushes out the oldest one.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Smallest request frame: `api_key` (2) + `api_version` (2) + `correlation_id` (4).
const MIN_REQUEST: i32 = 8;
/// Smallest response frame: `correlation_id` (4). Real responses can be shorter than 8 bytes
/// (a Heartbeat v0 response is 6), so the request minimum does not apply to them.
const MIN_RESPONSE: i32 = 4;

/// One request's header as it passed: enough to name it and match its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// The API key (0 = Produce, 1 = Fetch, ...); see [`api_name`].
    pub api_key: i16,
    /// The version of the API the client used.
    pub api_version: i16,
    /// The id the broker repeats in its response.
    pub correlation_id: i32,
}

/// A response matched to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The request this response answers.
    pub request: RequestHead,
    /// The response's top-level error code, for the APIs and versions whose body has one at a
    /// fixed place (see `ERROR_SPOTS`); None otherwise, and None when the frame ends before
    /// the code or its header's tagged fields are malformed.
    pub error_code: Option<i16>,
    /// The `now` passed with the bytes that completed the request's header, handed back
    /// unchanged (meant to be monotonic nanoseconds, for a latency histogram).
    pub sent_at: u64,
}

/// What the tap saw in one `client_bytes` or `broker_bytes` call; the caller turns these
/// into metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A request, reported once its first 8 bytes after the size field have passed.
    Request(RequestHead),
    /// A response matched to a request, reported once the response's last byte has passed.
    Response(Answered),
    /// A response whose correlation id matched no request in flight, reported once its last
    /// byte has passed.
    Unmatched,
    /// The stream stopped looking like Kafka: a size field was negative, below the minimum
    /// (8 for requests, 4 for responses) or above [`MAX_FRAME`]. Reported once; the tap then
    /// ignores both directions for the rest of the connection and forgets the requests in
    /// flight, so [`KafkaTap::in_flight`] is 0 from then on.
    Lost,
}

/// A request waiting for its response.
#[derive(Debug, Clone, Copy)]
struct Pending {
    head: RequestHead,
    sent_at: u64,
}

/// What the next byte of a direction's stream is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// The 4-byte size field before a frame.
    #[default]
    Size,
    /// A request's `api_key`, `api_version` and `correlation_id` (8 bytes).
    RequestHeader,
    /// A response's `correlation_id` (4 bytes).
    Correlation,
    /// The unsigned varints of a response header's tagged fields: the count, then per field
    /// its tag and its size (the field's data is skipped by counting).
    TagCount,
    TagKey,
    TagSize,
    /// A response's 2-byte top-level error code.
    ErrorCode,
    /// Nothing more of interest in this frame.
    Rest,
}

/// Position in one direction's byte stream.
#[derive(Debug, Default)]
struct Direction {
    phase: Phase,
    /// The bytes of the fixed-size field being read, and how many of them are in.
    field: [u8; 8],
    got: usize,
    /// Bytes of the current frame still to come (meaningless while `phase` is `Size`).
    left: u32,
    /// Bytes of the current frame to pass over before reading in `phase` again.
    skip: u32,
}

impl Direction {
    /// Adds one byte to the field being read; returns the field once `len` bytes are in.
    fn collect(&mut self, b: u8, len: usize) -> Option<[u8; 8]> {
        if let Some(slot) = self.field.get_mut(self.got) {
            *slot = b;
        }
        self.got = self.got.saturating_add(1);
        if self.got < len {
            return None;
        }
        self.got = 0;
        Some(self.field)
    }

    /// Adds one byte to the size field. Once it is complete, starts a frame whose first field
    /// is `first`, or returns false if the size is outside `min..=MAX_FRAME`.
    fn size_byte(&mut self, b: u8, min: i32, first: Phase) -> bool {
        let Some(f) = self.collect(b, 4) else {
            return true;
        };
        let size = i32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        self.left = size.unsigned_abs();
        self.phase = first;
        (min..=MAX_FRAME).contains(&size)
    }

    /// Skips everything up to the end of the frame.
    fn rest(&mut self) {
        self.phase = Phase::Rest;
        self.skip = u32::MAX;
    }
}

/// Passive decoder for one Kafka connection (a client on one side, a broker on the other).
#[derive(Debug, Default)]
pub struct KafkaTap {
    lost: bool,
    client: Direction,
    broker: Direction,
    in_flight: VecDeque<Pending>,
    /// The request answered by the response being read, once its correlation id has matched.
    answering: Option<Pending>,
    error_code: Option<i16>,
    /// Body bytes before the error code in the response being read: 0, or 4 for a leading
    /// `throttle_time_ms`.
    before_error: u32,
    tags_left: u32,
    varint: u32,
    shift: u32,
}

impl KafkaTap {
    /// A tap for a new connection; each direction must start at a frame's size field.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests still waiting for a response (for a gauge, and for counting as errors when
    /// the connection closes). A request whose response is partly through still counts.
    #[must_use]
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn in_flight(&self) -> usize {
        let answering = usize::from(self.answering.is_some());
        self.in_flight.len().saturating_add(answering)
    }

    /// Bytes the client sent toward the broker, in order, in chunks of any size (1 byte to
    /// many frames). `now` becomes the `sent_at` of requests whose header completes here.
    pub fn client_bytes(&mut self, bytes: &[u8], now: u64, out: &mut impl FnMut(Event)) {
        self.feed(true, bytes, now, out);
    }

    /// Bytes the broker sent back, in order, in chunks of any size. `now` is not used; it is
    /// taken for symmetry with `client_bytes`.
    pub fn broker_bytes(&mut self, bytes: &[u8], now: u64, out: &mut impl FnMut(Event)) {
        self.feed(false, bytes, now, out);
    }

    fn feed(&mut self, client: bool, mut bytes: &[u8], now: u64, out: &mut impl FnMut(Event)) {
        while !self.lost {
            let dir = if client {
                &mut self.client
            } else {
                &mut self.broker
            };
            if dir.phase != Phase::Size && dir.left == 0 {
                *dir = Direction::default();
                if !client {
                    self.end_response(out);
                }
                continue;
            }
            if dir.phase != Phase::Size && dir.skip > 0 {
                if bytes.is_empty() {
                    return;
                }
                let want = dir.left.min(dir.skip);
                let n = usize::try_from(want).map_or(bytes.len(), |w| w.min(bytes.len()));
                let taken = u32::try_from(n).unwrap_or(want);
                dir.left = dir.left.saturating_sub(taken);
                dir.skip = dir.skip.saturating_sub(taken);
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            bytes = rest;
            if dir.phase == Phase::Size {
                let (min, first) = if client {
                    (MIN_REQUEST, Phase::RequestHeader)
                } else {
                    (MIN_RESPONSE, Phase::Correlation)
                };
                if !dir.size_byte(b, min, first) {
                    self.lose(out);
                }
                continue;
            }
            dir.left = dir.left.saturating_sub(1);
            if client {
                self.client_byte(b, now, out);
            } else {
                self.broker_byte(b);
            }
        }
    }

    fn client_byte(&mut self, b: u8, now: u64, out: &mut impl FnMut(Event)) {
        let Some(f) = self.client.collect(b, 8) else {
            return;
        };
        self.client.rest();
        let head = RequestHead {
            api_key: i16::from_be_bytes([f[0], f[1]]),
            api_version: i16::from_be_bytes([f[2], f[3]]),
            correlation_id: i32::from_be_bytes([f[4], f[5], f[6], f[7]]),
        };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back(Pending { head, sent_at: now });
        out(Event::Request(head));
    }

    fn broker_byte(&mut self, b: u8) {
        let dir = &mut self.broker;
        match dir.phase {
            Phase::Correlation => {
                if let Some(f) = dir.collect(b, 4) {
                    self.match_response(i32::from_be_bytes([f[0], f[1], f[2], f[3]]));
                }
            }
            Phase::ErrorCode => {
                if let Some(f) = dir.collect(b, 2) {
                    self.error_code = Some(i16::from_be_bytes([f[0], f[1]]));
                    dir.rest();
                }
            }
            Phase::TagCount | Phase::TagKey | Phase::TagSize => self.tag_byte(b),
            Phase::Size | Phase::RequestHeader | Phase::Rest => {}
        }
    }

    /// Reads one byte of a response header's tagged fields: unsigned varints of at most 5
    /// bytes, 7 bits per byte, low bits first, high bit set on all but the last byte.
    fn tag_byte(&mut self, b: u8) {
        self.varint |= u32::from(b & 0x7f).checked_shl(self.shift).unwrap_or(0);
        self.shift = self.shift.saturating_add(7);
        if b & 0x80 != 0 {
            if self.shift > 28 {
                self.broker.rest();
            }
            return;
        }
        let value = self.varint;
        (self.varint, self.shift) = (0, 0);
        match self.broker.phase {
            Phase::TagCount => self.tags_left = value.saturating_add(1),
            Phase::TagKey => {
                self.broker.phase = Phase::TagSize;
                return;
            }
            _ => self.broker.skip = value,
        }
        // A field (or the count) is done: read the next tag, or go on to the error code.
        self.tags_left = self.tags_left.saturating_sub(1);
        if self.tags_left == 0 {
            self.seek_error_code();
        } else {
            self.broker.phase = Phase::TagKey;
        }
    }

    /// Goes to the error code, past `throttle_time_ms` when the body starts with it.
    fn seek_error_code(&mut self) {
        let dir = &mut self.broker;
        dir.skip = dir.skip.saturating_add(self.before_error);
        dir.phase = Phase::ErrorCode;
    }

    /// Finds the request a response answers and decides how to read the response's header.
    fn match_response(&mut self, correlation_id: i32) {
        self.broker.rest();
        let q = &mut self.in_flight;
        let Some(idx) = q
            .iter()
            .position(|p| p.head.correlation_id == correlation_id)
        else {
            return;
        };
        self.answering = q.remove(idx);
        if idx > 0 {
            // Responses come back in request order, so an older Produce still waiting was
            // sent with acks=0 and gets no response: forget it.
            let mut i = 0usize;
            q.retain(|p| {
                i = i.saturating_add(1);
                i > idx || p.head.api_key != PRODUCE
            });
        }
        let Some(p) = self.answering else { return };
        let Some((flexible, before_error)) = error_spot(p.head.api_key, p.head.api_version) else {
            return;
        };
        self.before_error = before_error;
        self.broker.skip = 0;
        if flexible {
            (self.varint, self.shift) = (0, 0);
            self.broker.phase = Phase::TagCount;
        } else {
            self.seek_error_code();
        }
    }

    /// Reports the response whose last byte just passed.
    fn end_response(&mut self, out: &mut impl FnMut(Event)) {
        let error_code = self.error_code.take();
        out(match self.answering.take() {
            Some(p) => Event::Response(Answered {
                request: p.head,
                error_code,
                sent_at: p.sent_at,
            }),
            None => Event::Unmatched,
        });
    }

    /// The requests still unanswered, oldest first, to be counted when the connection closes;
    /// none are left after.
    pub fn drain_in_flight(&mut self) -> impl Iterator<Item = RequestHead> + '_ {
        let answering = self.answering.take().map(|p| p.head);
        answering
            .into_iter()
            .chain(self.in_flight.drain(..).map(|p| p.head))
    }

    /// Marks the connection as not Kafka, forgets the requests in flight and reports it.
    fn lose(&mut self, out: &mut impl FnMut(Event)) {
        self.lost = true;
        self.in_flight.clear();
        self.answering = None;
        out(Event::Lost);
    }
}

/// Inclusive range of API versions.
type Versions = (i16, i16);
const NONE: Versions = (1, 0);
const ALL: Versions = (0, i16::MAX);
const fn from(v: i16) -> Versions {
    (v, i16::MAX)
}

/// Where one API's responses carry a top-level error code.
struct ErrorSpot {
    api_key: i16,
    /// Versions whose response body starts with `error_code` (int16).
    first: Versions,
    /// Versions whose body starts with `throttle_time_ms` (int32), then `error_code`.
    second: Versions,
    /// First version whose response header is v1 (`correlation_id`, then tagged fields);
    /// None if it is always v0.
    flexible: Option<i16>,
}

const fn spot(api_key: i16, first: Versions, second: Versions, flexible: Option<i16>) -> ErrorSpot {
    ErrorSpot {
        api_key,
        first,
        second,
        flexible,
    }
}

/// Checked against apache/kafka `clients/src/main/resources/common/message/*Response.json`
/// at trunk commit 1eb7644 (2024-10-25); each comment gives the versions that file defines.
/// Open-ended ranges assume later versions keep their leading fields, as all have so far.
/// `ApiVersions` (18) responses always use header v0 (KIP-511), though flexible from v3.
#[rustfmt::skip]
const ERROR_SPOTS: &[ErrorSpot] = &[
    spot(1, NONE, from(7), Some(12)),   // Fetch 0-17: error_code from v7
    spot(10, (0, 0), (1, 3), Some(3)),  // FindCoordinator 0-6: none from v4
    spot(11, (0, 1), from(2), Some(6)), // JoinGroup 0-9
    spot(12, (0, 0), from(1), Some(4)), // Heartbeat 0-4
    spot(13, (0, 0), from(1), Some(4)), // LeaveGroup 0-5
    spot(14, (0, 0), from(1), Some(4)), // SyncGroup 0-5
    spot(16, (0, 0), from(1), Some(3)), // ListGroups 0-5
    spot(17, ALL, NONE, None),          // SaslHandshake 0-1
    spot(18, ALL, NONE, None),          // ApiVersions 0-4 (0-5 in later trunk)
    spot(22, NONE, ALL, Some(2)),       // InitProducerId 0-5
    spot(24, NONE, from(4), Some(3)),   // AddPartitionsToTxn 0-5: error_code from v4
    spot(25, NONE, ALL, Some(3)),       // AddOffsetsToTxn 0-4
    spot(26, NONE, ALL, Some(3)),       // EndTxn 0-5
    spot(36, ALL, NONE, Some(2)),       // SaslAuthenticate 0-2
    spot(60, NONE, ALL, Some(0)),       // DescribeCluster 0-1
    spot(68, NONE, ALL, Some(0)),       // ConsumerGroupHeartbeat 0-1
    spot(76, NONE, ALL, Some(0)),       // ShareGroupHeartbeat 0
    spot(78, NONE, ALL, Some(0)),       // ShareFetch 0
    spot(79, NONE, ALL, Some(0)),       // ShareAcknowledge 0 (1-2 in later trunk)
];

/// For a response to (`api_key`, `api_version`): whether its header carries tagged fields,
/// and how many body bytes precede the error code. None if there is no top-level error code
/// at a fixed place.
fn error_spot(api_key: i16, api_version: i16) -> Option<(bool, u32)> {
    let s = ERROR_SPOTS.iter().find(|s| s.api_key == api_key)?;
    let has = |(lo, hi): Versions| lo <= api_version && api_version <= hi;
    let before_error = if has(s.first) {
        0
    } else if has(s.second) {
        4
    } else {
        return None;
    };
    Some((s.flexible.is_some_and(|f| api_version >= f), before_error))
}

/// API names by key, from the `name` of each `*Request.json` (keys 0-87 at trunk 1eb7644;
/// 88-92, and 74's newer name, from later trunk files).
#[rustfmt::skip]
const API_NAMES: [&str; 93] = [
    "produce", "fetch", "list_offsets", "metadata", "leader_and_isr", "stop_replica",
    "update_metadata", "controlled_shutdown", "offset_commit", "offset_fetch", // 0-9
    "find_coordinator", "join_group", "heartbeat", "leave_group", "sync_group",
    "describe_groups", "list_groups", "sasl_handshake", "api_versions", "create_topics", // 10-19
    "delete_topics", "delete_records", "init_producer_id", "offset_for_leader_epoch",
    "add_partitions_to_txn", "add_offsets_to_txn", "end_txn", "write_txn_markers",
    "txn_offset_commit", "describe_acls", // 20-29
    "create_acls", "delete_acls", "describe_configs", "alter_configs", "alter_replica_log_dirs",
    "describe_log_dirs", "sasl_authenticate", "create_partitions", "create_delegation_token",
    "renew_delegation_token", // 30-39
    "expire_delegation_token", "describe_delegation_token", "delete_groups", "elect_leaders",
    "incremental_alter_configs", "alter_partition_reassignments", "list_partition_reassignments",
    "offset_delete", "describe_client_quotas", "alter_client_quotas", // 40-49
    "describe_user_scram_credentials", "alter_user_scram_credentials", "vote",
    "begin_quorum_epoch", "end_quorum_epoch", "describe_quorum", "alter_partition",
    "update_features", "envelope", "fetch_snapshot", // 50-59
    "describe_cluster", "describe_producers", "broker_registration", "broker_heartbeat",
    "unregister_broker", "describe_transactions", "list_transactions", "allocate_producer_ids",
    "consumer_group_heartbeat", "consumer_group_describe", // 60-69
    "controller_registration", "get_telemetry_subscriptions", "push_telemetry",
    "assign_replicas_to_dirs", "list_config_resources", "describe_topic_partitions",
    "share_group_heartbeat", "share_group_describe", "share_fetch", "share_acknowledge", // 70-79
    "add_raft_voter", "remove_raft_voter", "update_raft_voter", "initialize_share_group_state",
    "read_share_group_state", "write_share_group_state", "delete_share_group_state",
    "read_share_group_state_summary", "streams_group_heartbeat", "streams_group_describe", // 80-89
    "describe_share_group_offsets", "alter_share_group_offsets", "delete_share_group_offsets",
];

/// The API key's name in snake case (`produce`, `fetch`, `list_offsets`, ...) for keys 0 to
/// 92, `"unknown"` for any other key.
#[must_use]
pub fn api_name(api_key: i16) -> &'static str {
    let name = usize::try_from(api_key).ok().and_then(|i| API_NAMES.get(i));
    name.copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: a tiny deterministic generator for the split and fuzz tests.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    fn frame(body: Vec<u8>) -> Vec<u8> {
        [(body.len() as i32).to_be_bytes().to_vec(), body].concat()
    }

    /// A request frame: the header with `client_id` "cli", then `extra` body bytes.
    fn request(key: i16, ver: i16, corr: i32, extra: usize) -> Vec<u8> {
        let head = [key.to_be_bytes(), ver.to_be_bytes()].concat();
        let tail = [&[0, 3, b'c', b'l', b'i'][..], &vec![0xAB; extra]].concat();
        frame([head, corr.to_be_bytes().to_vec(), tail].concat())
    }

    /// A response frame: the correlation id, then `rest` (header tagged fields and body).
    fn response(corr: i32, rest: &[u8]) -> Vec<u8> {
        frame([&corr.to_be_bytes()[..], rest].concat())
    }

    /// Feeds the client bytes (at time 1), then the broker bytes (at time 2).
    fn run(tap: &mut KafkaTap, client: &[u8], broker: &[u8]) -> Vec<Event> {
        let mut ev = Vec::new();
        tap.client_bytes(client, 1, &mut |e| ev.push(e));
        tap.broker_bytes(broker, 2, &mut |e| ev.push(e));
        ev
    }

    /// The events in short form: "key/version/correlation" for a request, the same with the
    /// error code and sent-at time for a response.
    fn show(ev: &[Event]) -> String {
        let h = |h: &RequestHead| format!("{}/{}/{}", h.api_key, h.api_version, h.correlation_id);
        let one = |e: &Event| match e {
            Event::Request(r) => format!("req {}", h(r)),
            Event::Response(a) => {
                format!("resp {} {:?} t{}", h(&a.request), a.error_code, a.sent_at)
            }
            other => format!("{other:?}"),
        };
        ev.iter().map(one).collect::<Vec<_>>().join(", ")
    }

    /// Sends one request and its response (`rest` after the correlation id); returns the
    /// response's error code after checking that exactly the two events came out.
    fn error_of(key: i16, ver: i16, rest: &[u8]) -> Option<i16> {
        let mut tap = KafkaTap::new();
        match run(&mut tap, &request(key, ver, 7, 9), &response(7, rest))[..] {
            [Event::Request(_), Event::Response(a)] if tap.in_flight() == 0 => a.error_code,
            ref ev => panic!("unexpected events: {ev:?}"),
        }
    }

    #[test]
    fn error_code_positions() {
        // ApiVersions v3 (header v0 although flexible): error_code, api_keys (compact array
        // of one), throttle_time_ms, tagged fields; 35 is UNSUPPORTED_VERSION
        let api_versions = |e: u8| [0, e, 2, 0, 18, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0];
        assert_eq!(error_of(18, 3, &api_versions(0)), Some(0));
        assert_eq!(error_of(18, 3, &api_versions(35)), Some(35));
        // Heartbeat v4: header tags (tag 0 with 3 bytes, tag 300 as a 2-byte varint with
        // none), then throttle_time_ms 100, error_code 27 (REBALANCE_IN_PROGRESS), no tags
        let heartbeat = [2, 0, 3, 9, 9, 9, 0xAC, 2, 0, 0, 0, 0, 100, 0, 27, 0];
        assert_eq!(error_of(12, 4, &heartbeat), Some(27));
        assert_eq!(error_of(12, 0, &[0, 16]), Some(16)); // first field
        assert_eq!(error_of(12, 1, &[0, 0, 0, 5, 0, 22]), Some(22)); // after throttle_time_ms
        assert_eq!(error_of(12, 1, &[0, 0, 0, 5, 0]), None); // frame ends inside the code
        assert_eq!(error_of(10, 3, &[0, 0, 0, 0, 0, 0, 15, 0, 0]), Some(15)); // flexible v3
        assert_eq!(error_of(10, 4, &[0, 0, 0, 0, 0, 1, 0]), None); // no top-level code
        assert_eq!(error_of(1, 6, &[0; 8]), None); // Fetch v6: per-partition codes only
        assert_eq!(error_of(1, 7, &[0, 0, 0, 0, 0, 1, 0, 0]), Some(1));
        assert_eq!(error_of(1, 12, &[0, 0, 0, 0, 0, 0, 3, 0, 0]), Some(3));
        // a 6-byte varint as the tag size is malformed, so the code after it is not trusted
        let bad_varint = [1, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0, 0, 0, 0, 0, 0, 9, 0];
        assert_eq!(error_of(12, 4, &bad_varint), None);
        let good_varint = [1, 0, 0x80, 0x80, 0x80, 0x80, 0, 0, 0, 0, 0, 0, 9, 0];
        assert_eq!(error_of(12, 4, &good_varint), Some(9));
        assert_eq!(error_of(1, 12, &[1, 0, 200, 1, 0, 0, 0, 0, 0, 1]), None); // tag too long
        assert_eq!(error_of(0, 9, &[0; 8]), None); // Produce: per-partition codes only
        assert_eq!(error_of(3, 12, &[0; 8]), None); // Metadata: likewise
    }

    #[test]
    fn produce_acks0_dropped_when_a_later_request_is_answered() {
        let mut tap = KafkaTap::new();
        let mut ev = Vec::new();
        for (key, ver, corr) in [(0, 9, 1), (12, 0, 2), (3, 12, 3)] {
            ev.extend(run(&mut tap, &request(key, ver, corr, 40), &[]));
        }
        assert_eq!(tap.in_flight(), 3);
        ev.extend(run(&mut tap, &[], &response(3, &[0, 0, 0, 0, 0, 1, 0])));
        let want = "req 0/9/1, req 12/0/2, req 3/12/3, resp 3/12/3 None t1";
        assert_eq!(show(&ev), want);
        assert_eq!(tap.in_flight(), 1, "older non-Produce requests stay");
        let ev = run(&mut tap, &[], &response(2, &[0, 0]));
        assert_eq!(show(&ev), "resp 12/0/2 Some(0) t1");
    }

    #[test]
    fn unmatched_and_sent_at() {
        let mut tap = KafkaTap::new();
        let mut ev = Vec::new();
        let req = request(12, 0, 5, 0);
        tap.client_bytes(&req[..9], 100, &mut |e| ev.push(e));
        tap.client_bytes(&req[9..], 200, &mut |e| ev.push(e));
        tap.broker_bytes(&response(99, &[0, 0]), 300, &mut |e| ev.push(e));
        tap.broker_bytes(&response(5, &[0, 3]), 400, &mut |e| ev.push(e));
        assert_eq!(show(&ev), "req 12/0/5, Unmatched, resp 12/0/5 Some(3) t200");
    }

    #[test]
    fn lost_once_on_a_bad_size() {
        let good = request(3, 1, 1, 0);
        for bad in [7, -1, i32::MIN, MAX_FRAME + 1] {
            let mut tap = KafkaTap::new();
            let client = [good.clone(), bad.to_be_bytes().to_vec(), good.clone()].concat();
            let ev = run(&mut tap, &client, &response(1, &[]));
            assert_eq!((show(&ev), tap.in_flight()), ("req 3/1/1, Lost".into(), 0));
        }
        let mut tap = KafkaTap::new();
        let broker = [response(1, &[]), 3i32.to_be_bytes().to_vec()].concat();
        let ev = run(&mut tap, &request(3, 1, 1, 0), &broker);
        assert_eq!(show(&ev), "req 3/1/1, resp 3/1/1 None t1, Lost");
        assert!(run(&mut tap, &good, &broker).is_empty());
    }

    #[test]
    fn in_flight_is_bounded() {
        let mut tap = KafkaTap::new();
        let client: Vec<u8> = (0..5000).flat_map(|c| request(3, 12, c, 0)).collect();
        run(&mut tap, &client, &[]);
        assert_eq!(tap.in_flight(), MAX_IN_FLIGHT);
        let broker = [response(4999, &[]), response(0, &[])].concat();
        let ev = run(&mut tap, &[], &broker);
        assert_eq!(show(&ev), "resp 3/12/4999 None t1, Unmatched");
    }

    /// Feeds both sides in chunks of random sizes: all client bytes first, or with `mix`
    /// the two sides interleaved at random. Checks the in-flight bound after every chunk.
    fn feed_random(
        tap: &mut KafkaTap,
        (mut c, mut b): (&[u8], &[u8]),
        mix: bool,
        rng: &mut Rng,
        out: &mut impl FnMut(Event),
    ) {
        while !c.is_empty() || !b.is_empty() {
            let to_broker = c.is_empty() || (mix && rng.below(2) == 0);
            let side = if to_broker { &mut b } else { &mut c };
            let s: &[u8] = side;
            let max = if rng.below(4) == 0 { 200 } else { 6 };
            let (chunk, rest) = s.split_at((1 + rng.below(max)).min(s.len()));
            *side = rest;
            if to_broker {
                tap.broker_bytes(chunk, 2, out);
            } else {
                tap.client_bytes(chunk, 1, out);
            }
            assert!(tap.in_flight() <= MAX_IN_FLIGHT);
        }
    }

    #[test]
    fn random_splits_give_the_same_events() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut client, mut broker) = (Vec::new(), Vec::new());
        for corr in 0..300 {
            let (key, ver, rest): (i16, i16, &[u8]) = match rng.below(6) {
                0 => (0, 3, &[]), // acks=0: no response
                1 => (12, 4, &[1, 1, 2, 7, 7, 0, 0, 0, 0, 0, 25, 0]),
                2 => (18, 3, &[0, 35, 1, 0, 0, 0, 0, 0]),
                3 => (1, 11, &[0; 300]),
                4 => (22, 1, &[0, 0, 0, 0, 0, 15, 0, 0]),
                _ => (99, 0, &[]),
            };
            client.extend(request(key, ver, corr, rng.below(70)));
            if key != 0 {
                broker.extend(response(corr, rest));
            }
        }
        broker.extend(response(-5, &[1, 2, 3]));
        let whole = run(&mut KafkaTap::new(), &client, &broker);
        let text = show(&whole);
        assert!(
            ["Some(0)", "Some(15)", "Some(25)", "Some(35)", "Unmatched"]
                .iter()
                .all(|s| text.contains(s))
        );
        for _ in 0..500 {
            let mut ev = Vec::new();
            let (tap, both) = (&mut KafkaTap::new(), (&client[..], &broker[..]));
            feed_random(tap, both, false, &mut rng, &mut |e| ev.push(e));
            assert_eq!(ev, whole);
        }
    }

    /// Random bytes biased toward Kafka-like pieces, so that decoding often gets past the
    /// size check: requests for keys in the error table, responses with small correlation
    /// ids, varint-like bytes, and noise (including bad sizes).
    fn noise(rng: &mut Rng, data: &mut Vec<u8>, client: bool) {
        data.clear();
        let len = rng.below(300);
        while data.len() < len {
            let piece: Vec<u8> = (0..rng.below(24))
                .map(|_| [0, 1, 0x80, 0xFF, rng.below(256) as u8][rng.below(5)])
                .collect();
            match rng.below(8) {
                0 => data.extend((rng.below(1 << 32) as u32).to_be_bytes()),
                1 => data.extend(piece),
                _ if client => {
                    let key = [0, 1, 10, 12, 18, 22, 36, 17][rng.below(8)];
                    let ver = rng.below(14) as i16;
                    data.extend(request(key, ver, rng.below(6) as i32, piece.len()));
                }
                _ => data.extend(response(rng.below(6) as i32, &piece)),
            }
        }
        data.truncate(len);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0xDEAD_BEEF_1234_5678);
        let (mut client, mut broker) = (Vec::new(), Vec::new());
        let mut seen = [0usize; 3]; // responses with an error code, unmatched, lost
        for _ in 0..200_000 {
            noise(&mut rng, &mut client, true);
            noise(&mut rng, &mut broker, false);
            let (tap, both) = (&mut KafkaTap::new(), (&client[..], &broker[..]));
            feed_random(tap, both, true, &mut rng, &mut |e| match e {
                Event::Response(a) if a.error_code.is_some() => seen[0] += 1,
                Event::Unmatched => seen[1] += 1,
                Event::Lost => seen[2] += 1,
                _ => {}
            });
        }
        assert!(seen.iter().all(|&n| n > 1000), "too shallow: {seen:?}");
    }

    #[test]
    fn names() {
        assert_eq!((api_name(0), api_name(18)), ("produce", "api_versions"));
        assert_eq!(api_name(92), "delete_share_group_offsets");
        assert_eq!((api_name(93), api_name(-1)), ("unknown", "unknown"));
    }
}
