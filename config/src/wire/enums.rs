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
    AppProtocol <=> AppProtocol { Http, Http2, Grpc, Tcp }
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
