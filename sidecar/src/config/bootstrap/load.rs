//! Reading a bootstrap file: relative paths resolved against its folder, then the checks
//! that name the field to fix.

use super::Bootstrap;
use std::path::Path;
use trellis_config::{ConfigError, NodeIdentity};

impl Bootstrap {
    /// Reads and checks a bootstrap file; relative paths inside it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Bootstrap, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            field: String::new(),
            message: format!("cannot read the bootstrap file: {e}"),
        })?;
        let mut b: Bootstrap = trellis_config::parse_document(&file, &text, 1)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(m) = &b.mesh_file
            && m.is_relative()
        {
            b.mesh_file = Some(base.join(m));
        }
        if let Some(cp) = &mut b.control_plane {
            for p in [&mut cp.ca_bundle, &mut cp.token_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        let err = |field: &str, message: &str| ConfigError {
            file: file.clone(),
            line: 1,
            field: field.into(),
            message: message.into(),
        };
        match (&b.mesh_file, &b.control_plane) {
            (None, None) => {
                return Err(err(
                    "meshFile",
                    "set meshFile (standalone) or controlPlane as the config source",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "controlPlane",
                    "set only one of meshFile and controlPlane",
                ));
            }
            (None, Some(cp)) => {
                if let Err(e) = trellis_proto::connect::normalize(&cp.address) {
                    return Err(err("controlPlane.address", &e.to_string()));
                }
                if cp.ca_bundle.is_none() {
                    return Err(err(
                        "controlPlane.caBundle",
                        "required: the mesh CA bundle (ca.pem in trellis-control's --state-dir) that the control plane's certificate chains to",
                    ));
                }
                if cp.token_file.is_some() && b.workload.service_account.is_none() {
                    return Err(err(
                        "workload.serviceAccount",
                        "required with controlPlane.tokenFile: the identity the join token proves",
                    ));
                }
            }
            _ => {}
        }
        if b.protocol_detection.timeout.is_zero() {
            return Err(err(
                "protocolDetection.timeout",
                "must be above 0, e.g. 200ms; list ports in opaquePorts to skip detection",
            ));
        }
        if let Some(g) = &b.gateway
            && g.listen.is_empty()
        {
            return Err(err(
                "gateway.listen",
                "name at least one Gateway listener and its address, e.g. {http: 127.0.0.1:8080}",
            ));
        }
        for (key, probe) in &b.app_probes {
            if !matches!(probe.scheme.as_str(), "HTTP" | "HTTPS") || !probe.path.starts_with('/') {
                return Err(err(
                    &format!("appProbes.{key}"),
                    "scheme must be HTTP or HTTPS and path must start with /",
                ));
            }
        }
        if b.limits.max_header_bytes < 1024 {
            return Err(err("limits.maxHeaderBytes", "must be at least 1024"));
        }
        if b.limits.max_connections == 0 {
            return Err(err("limits.maxConnections", "must be at least 1"));
        }
        Ok(b)
    }

    pub fn node(&self) -> NodeIdentity {
        NodeIdentity {
            name: self.workload.name.clone(),
            namespace: self.workload.namespace.clone(),
            labels: self.workload.labels.clone(),
            service_account: self.workload.service_account.clone(),
        }
    }
}
