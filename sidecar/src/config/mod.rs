//! Where the proxy's config comes from and what it becomes: the bootstrap (a file, or the
//! pod's environment under Kubernetes), the mesh file or the control plane's stream, DNS for
//! ExternalName Services, and the compiled `Runtime` that requests read.

pub(crate) mod bootstrap;
pub(crate) mod discovery;
pub(crate) mod dns;
pub(crate) mod kubernetes;
pub(crate) mod mesh_file;
pub(crate) mod registry;
pub(crate) mod resolve;
pub(crate) mod runtime;
pub(crate) mod store;
