//! Where an inbound request goes: the app port, chosen from the redirected destination or the
//! Service port the `Host` names. The Host picks a port, never a policy: the policies that
//! then apply are those of the port (`config/delivery.rs`).

use crate::config::delivery::AppPorts;
use crate::config::runtime::Runtime;
use crate::http::errors::ProxyError;
use http::uri::Authority;

/// The app port an inbound request goes to.
/// - A connection iptables redirected was sent to an app port: that port, when the app
///   listens there, whatever the Host says (a client outside the mesh may send any).
/// - A Host naming a Service this workload serves: that Service port's target. A port the
///   Service lacks, or a target the app lacks, is refused; the Host never picks another port.
/// - Any other Host: its port when the app listens there, else the default port.
pub(crate) fn app_port(
    rt: &Runtime,
    app: &AppPorts,
    redirected: Option<u16>,
    authority: Option<&Authority>,
) -> Result<u16, ProxyError> {
    if let Some(p) = redirected.filter(|&p| app.has(p)) {
        return Ok(p);
    }
    let named = authority.and_then(|a| Some((rt.service(a.host())?, a.port_u16())));
    if let Some((svc, port)) = named.filter(|(svc, _)| svc.serves) {
        let sp = svc.port(port).ok_or_else(|| ProxyError::NoServicePort {
            service: svc.label.to_string(),
            port: port.unwrap_or(80),
        })?;
        return app
            .target(sp.port, sp.target_port.as_ref())
            .ok_or_else(|| ProxyError::NoAppPort {
                service: svc.label.to_string(),
                port: sp.port,
            });
    }
    authority
        .and_then(Authority::port_u16)
        .filter(|&p| app.has(p))
        .or(app.default)
        .ok_or(ProxyError::NoAppPorts)
}
