//! Which proxies this control plane serves: the discovery protocol each side speaks, and the
//! refusal that tells the operator which side to upgrade.

// A fleet is upgraded control plane first, then one proxy at a time, so a control plane must
// serve the proxies of the release before its own. It serves protocols MIN_PROTOCOL to
// PROTOCOL (trellis-proto) and sends a proxy only the resource kinds and enum values that the
// proxy's protocol knows. Today that range is 2 to 3; what a protocol-2 proxy is sent in
// place of what it cannot read is trellis-config's `protocol` module, applied by
// `World::compiled_for_proxy`.

use tonic::metadata::{MetadataMap, MetadataValue};
use trellis_proto::{MIN_PROTOCOL, PROTOCOL, PROTOCOL_HEADER, RELEASE_HEADER};

/// This control plane's release.
const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// A proxy whose discovery protocol this control plane does not serve. The message names both
/// sides and the one to upgrade; the proxy receives it as FAILED_PRECONDITION and logs it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unsupported {
    #[error(
        "{proxy} speaks discovery protocol {protocol}; this control plane (release {RELEASE}) \
         speaks {served}: upgrade the proxy to release {RELEASE}, the control plane's",
        served = served()
    )]
    ProxyTooOld { proxy: String, protocol: u32 },
    #[error(
        "{proxy} speaks discovery protocol {protocol}; this control plane (release {RELEASE}) \
         speaks {served}: upgrade the control plane to release {release} or later first, then \
         the proxies",
        served = served()
    )]
    ProxyTooNew {
        proxy: String,
        protocol: u32,
        release: String,
    },
}

/// Whether this control plane serves a proxy that subscribed with `protocol` and `release`.
/// Proxies of protocol 1 sent neither, so 0 means 1.
pub(crate) fn check(protocol: u32, release: &str) -> Result<(), Unsupported> {
    let protocol = protocol.max(1);
    let proxy = if release.is_empty() {
        "this proxy (a release that does not say which)".to_string()
    } else {
        format!("this proxy (release {release})")
    };
    if protocol < MIN_PROTOCOL {
        return Err(Unsupported::ProxyTooOld { proxy, protocol });
    }
    if protocol > PROTOCOL {
        let release = if release.is_empty() {
            "the proxy's".to_string()
        } else {
            release.to_string()
        };
        return Err(Unsupported::ProxyTooNew {
            proxy,
            protocol,
            release,
        });
    }
    Ok(())
}

/// Names this control plane's protocol and release in `meta`, the headers of every discovery
/// response and refusal, so that a proxy can say which control plane it met.
pub(crate) fn announce(meta: &mut MetadataMap) {
    meta.insert(PROTOCOL_HEADER, MetadataValue::from(PROTOCOL));
    meta.insert(RELEASE_HEADER, MetadataValue::from_static(RELEASE));
}

fn served() -> String {
    if MIN_PROTOCOL == PROTOCOL {
        format!("{PROTOCOL}")
    } else {
        format!("{MIN_PROTOCOL} to {PROTOCOL}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_name_the_side_to_upgrade_and_the_release() {
        let old = check(0, "").unwrap_err().to_string();
        assert!(old.contains("speaks discovery protocol 1;"), "{old}");
        assert!(
            old.contains(&format!("upgrade the proxy to release {RELEASE}")),
            "{old}"
        );
        let new = check(PROTOCOL + 1, "9.0.0").unwrap_err().to_string();
        assert!(new.starts_with("this proxy (release 9.0.0)"), "{new}");
        assert!(
            new.contains("upgrade the control plane to release 9.0.0 or later first"),
            "{new}"
        );
        assert!(check(PROTOCOL, RELEASE).is_ok());
        assert!(check(MIN_PROTOCOL, "").is_ok());
    }
}
