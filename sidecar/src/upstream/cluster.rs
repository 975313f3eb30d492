//! A cluster as one try of a request sees it: its endpoints and how to choose one, how to
//! speak to it, and the outlier detection that hears how each endpoint answered.

use super::balance::Balancer;
use super::outlier::Outlier;
use std::sync::Arc;
use trellis_config::model::{AppProtocol, HashKey};

pub struct Upstream {
    pub name: Arc<String>,
    pub protocol: AppProtocol,
    pub balancer: Balancer,
    /// The ring-hash key, when the cluster balances by one.
    pub hash_key: Option<HashKey>,
    pub outlier: Option<Arc<Outlier>>,
}
