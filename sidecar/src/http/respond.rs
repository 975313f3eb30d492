//! Turning a `ProxyError` into the answer the downstream gets: an HTTP status with a
//! `trellis-error` header, or for gRPC a trailers-only response with `grpc-status`.

use crate::http::body::Body;
use crate::http::errors::ProxyError;
use http::{HeaderValue, Response, header};

pub const TRELLIS_ERROR: &str = "trellis-error";

/// Builds the response for `err`. `grpc` says whether the request was gRPC.
pub fn error_response(err: &ProxyError, grpc: bool) -> Response<Body> {
    let a = err.answer();
    let message = err.to_string();
    let mut res = if grpc {
        // gRPC clients read the status from grpc-status, and an HTTP status other than 200
        // would hide it; a trailers-only response carries it in the headers.
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(u16::from(a.grpc)));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(Body::full(format!("trellis: {message}\n")));
        *r.status_mut() = a.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    res.headers_mut()
        .insert(TRELLIS_ERROR, HeaderValue::from_static(a.code));
    if let Some(secs) = a.retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if a.close {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec, "Responses").
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether the request is gRPC over HTTP/2 (`application/grpc`, `application/grpc+proto`,
/// with parameters or not), which cannot be carried over HTTP/1.1. gRPC-Web
/// (`application/grpc-web…`) is made for HTTP/1.1 and is not.
pub fn needs_http2<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';' | b' ')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_needs_http2_and_grpc_web_does_not() {
        let req = |ct: &str| {
            http::Request::builder()
                .header("content-type", ct)
                .body(())
                .unwrap()
        };
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc; charset=x",
        ] {
            assert!(needs_http2(&req(ct)), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "application/json",
        ] {
            assert!(!needs_http2(&req(ct)), "{ct}");
        }
        assert!(
            is_grpc(&req("application/grpc-web")),
            "gRPC-Web still gets gRPC errors"
        );
    }
}
