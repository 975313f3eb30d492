//! The snapshot's enums and their `trellis.v1` counterparts, variant for variant.

use super::{Problem, WireError};
use crate::model::{
    AppProtocol, AuthzAction, EscapedSlashMode, HttpMethod, LbPolicy, MtlsMode, OtlpProtocol,
    OutboundMode, PathMatchType, PathParameterMode, SlashMode, SlidingWindowType, ValueMatchType,
};
use trellis_proto::v1 as pb;

/// A snapshot enum read from its wire value; zero (unspecified) and unknown values are errors.
pub(crate) trait FromWire: Sized {
    fn from_wire(v: i32, field: &'static str) -> Result<Self, WireError>;
}

// Each pair maps every variant by the same name: the proto enums are the snapshot's enums
// with a `TYPE_` prefix and a zero value that means "not set".
macro_rules! pairs {
    ($($model:ident <=> $pb:ident { $($v:ident),+ $(,)? })*) => {$(
        impl From<$model> for pb::$pb {
            fn from(v: $model) -> Self {
                match v { $($model::$v => pb::$pb::$v,)+ }
            }
        }

        impl FromWire for $model {
            fn from_wire(v: i32, field: &'static str) -> Result<Self, WireError> {
                match pb::$pb::try_from(v) {
                    $(Ok(pb::$pb::$v) => Ok($model::$v),)+
                    #[allow(unreachable_patterns)]
                    Ok(_) => Err(WireError::new(field, Problem::Unspecified)),
                    Err(_) => Err(WireError::new(field, Problem::UnknownEnum(v))),
                }
            }
        }
    )*};
}

pairs! {
    MtlsMode <=> MtlsMode { Strict, Permissive, Disabled }
    OutboundMode <=> OutboundMode { AllowAny, RegistryOnly }
    OtlpProtocol <=> OtlpProtocol { Grpc, Http }
    SlashMode <=> SlashMode { Merge, Keep }
    EscapedSlashMode <=> EscapedSlashMode { Reject, Decode, Keep }
    PathParameterMode <=> PathParameterMode { Reject, Strip, Keep }
    AuthzAction <=> AuthzAction { Allow, Deny }
    PathMatchType <=> PathMatchType { Exact, PathPrefix, RegularExpression }
    ValueMatchType <=> ValueMatchType { Exact, RegularExpression }
    HttpMethod <=> HttpMethod { Get, Head, Post, Put, Delete, Connect, Options, Trace, Patch }
    LbPolicy <=> LbPolicy { RoundRobin, LeastRequest, Random, RingHash, PeakEwma }
    SlidingWindowType <=> SlidingWindowType { Count, Time }
}

/// A rule's method: `HTTP_METHOD_ANY` (zero) is no method match.
pub(crate) fn method_to_wire(m: Option<HttpMethod>) -> i32 {
    m.map_or(pb::HttpMethod::Any, pb::HttpMethod::from) as i32
}

pub(crate) fn method_from_wire(v: i32) -> Result<Option<HttpMethod>, WireError> {
    if v == pb::HttpMethod::Any as i32 {
        return Ok(None);
    }
    HttpMethod::from_wire(v, "method").map(Some)
}

/// A port's protocol as its two wire fields: `protocol`, which every proxy reads (a named
/// opaque protocol is `TCP` there), and `opaque_protocol`, which names it.
pub(crate) fn app_protocol_to_wire(p: AppProtocol) -> (i32, i32) {
    use pb::OpaqueProtocol as O;
    let opaque = |o: O| (pb::AppProtocol::Tcp as i32, o as i32);
    match p {
        AppProtocol::Http => (pb::AppProtocol::Http as i32, 0),
        AppProtocol::Http2 => (pb::AppProtocol::Http2 as i32, 0),
        AppProtocol::Grpc => (pb::AppProtocol::Grpc as i32, 0),
        AppProtocol::Tcp => (pb::AppProtocol::Tcp as i32, 0),
        AppProtocol::Kafka => opaque(O::Kafka),
        AppProtocol::Amqp => opaque(O::Amqp),
        AppProtocol::Stomp => opaque(O::Stomp),
        AppProtocol::Mqtt => opaque(O::Mqtt),
        AppProtocol::Nats => opaque(O::Nats),
        AppProtocol::Redis => opaque(O::Redis),
        AppProtocol::Mysql => opaque(O::Mysql),
        AppProtocol::Postgresql => opaque(O::Postgresql),
    }
}

/// The inverse of `app_protocol_to_wire`. An opaque protocol beside anything but TCP, or
/// one this build does not know, is an error.
pub(crate) fn app_protocol_from_wire(protocol: i32, opaque: i32) -> Result<AppProtocol, WireError> {
    use pb::OpaqueProtocol as O;
    let base = match pb::AppProtocol::try_from(protocol) {
        Ok(pb::AppProtocol::Http) => AppProtocol::Http,
        Ok(pb::AppProtocol::Http2) => AppProtocol::Http2,
        Ok(pb::AppProtocol::Grpc) => AppProtocol::Grpc,
        Ok(pb::AppProtocol::Tcp) => AppProtocol::Tcp,
        Ok(pb::AppProtocol::Unspecified) => {
            return Err(WireError::new("protocol", Problem::Unspecified));
        }
        Err(_) => return Err(WireError::new("protocol", Problem::UnknownEnum(protocol))),
    };
    let named = match O::try_from(opaque) {
        Ok(O::Unspecified) => return Ok(base),
        Ok(O::Kafka) => AppProtocol::Kafka,
        Ok(O::Amqp) => AppProtocol::Amqp,
        Ok(O::Stomp) => AppProtocol::Stomp,
        Ok(O::Mqtt) => AppProtocol::Mqtt,
        Ok(O::Nats) => AppProtocol::Nats,
        Ok(O::Redis) => AppProtocol::Redis,
        Ok(O::Mysql) => AppProtocol::Mysql,
        Ok(O::Postgresql) => AppProtocol::Postgresql,
        Err(_) => {
            return Err(WireError::new(
                "opaque_protocol",
                Problem::UnknownEnum(opaque),
            ));
        }
    };
    if base != AppProtocol::Tcp {
        return Err(WireError::new(
            "opaque_protocol",
            Problem::Invalid(format!(
                "{} beside a protocol that is not TCP",
                named.name()
            )),
        ));
    }
    Ok(named)
}
