//! What every request handler shares: built by `crate::app` at start-up, owned by the HTTP
//! layer (so `app` depends on `http`, never the other way round).

use std::sync::Arc;

use serde_json::json;

use crate::blob::BlobStore;
use crate::config::Config;
use crate::identity::Authenticator;
use crate::model::SCHEMA_VERSION;
use crate::policy::PolicyEngine;
use crate::store::Store;
use crate::write::Namespace;

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub blobs: BlobStore,
    pub auth: Authenticator,
    pub policy: Arc<PolicyEngine>,
    pub namespace: Namespace,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// POST /write transactions.
    pub writes: Arc<crate::write::WriteService>,
    /// Set when the server stops: long-lived responses (feeds) end so connections can close.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub feeds: super::FeedCounts,
    /// Failed link redemptions per identity (SPEC §9.4's rate limit).
    pub redeem_failures: super::shares::RedeemFailures,
    /// The task queue's workers' shared parts (SPEC §9.6).
    pub tasks: Arc<crate::tasks::TaskContext>,
}

impl AppState {
    /// GET /config.
    pub fn public_config(&self) -> serde_json::Value {
        json!({
            "GMDATA_NAMESPACE": self.config.namespace,
            "GMDATA_NAMESPACE_OID": self.namespace.oid,
            "GMDATA_NAMESPACE_USERFIELD": self.namespace.userfield,
            "schemaversion": SCHEMA_VERSION,
            "jwt_algorithms": self.auth.algorithms(),
            "client_prefix": self.config.client_prefix,
            "limits": self.config.limits,
        })
    }
}
