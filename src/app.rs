//! Building and running the service: `Application::build(config)` opens the store,
//! makes sure the root and the namespace folder exist, binds the listener; `run` serves.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::blob::BlobStore;
use crate::config::Config;
use crate::crypto::MasterKeys;
use crate::error::Error;
use crate::identity::Authenticator;
use crate::model::{Event, Oid, Tstamp};
use crate::policy::PolicyEngine;
use crate::store::Store;
use crate::write::Namespace;

/// The built-in policies (policies/ in the source tree).
const ROOT_POLICY: &str = include_str!("../policies/root.json");
const NAMESPACE_POLICY: &str = include_str!("../policies/namespace.rego");

pub use crate::http::AppState;

pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Store::open(&config.data_dir, &config.sqlite, config.postgres.as_ref())?;
        let blobs = open_blobs(&config)?;
        let policy = Arc::new(PolicyEngine::new(config.policy_limits()));
        let auth = Authenticator::from_config(&config.identity)?;
        let namespace = bootstrap(&store, &policy, &config).await?;
        let listener = TcpListener::bind(config.listen).await?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let tasks = Arc::new(crate::tasks::TaskContext::new(
            store.clone(),
            blobs.clone(),
            config.tasks.clone(),
        )?);
        let writes = Arc::new(crate::write::WriteService {
            store: store.clone(),
            blobs: blobs.clone(),
            policy: policy.clone(),
            namespace: namespace.clone(),
            limits: config.limits.clone(),
            metrics: metrics.clone(),
        });
        tracing::info!(
            listen = %listener.local_addr()?,
            data_dir = %config.data_dir.display(),
            namespace = %config.namespace,
            namespace_oid = %namespace.oid,
            store = %store.describe(),
            synchronous = ?config.sqlite.synchronous,
            blobs = %blobs.describe(),
            master_key = %blobs.keys().active_id(),
            task_workers = config.tasks.workers,
            share_webhook = config.tasks.webhook.as_ref().map_or("off", |w| w.url.as_str()),
            "vellum is ready"
        );
        Ok(Application {
            listener,
            state: Arc::new(AppState {
                config,
                store,
                blobs,
                auth,
                policy,
                namespace,
                metrics,
                writes,
                shutdown: tokio::sync::watch::Sender::new(false),
                feeds: Default::default(),
                redeem_failures: Default::default(),
                tasks,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        // Deferred work runs while the server serves, and stops (giving its leases back)
        // before the store closes.
        let runner = crate::tasks::TaskRunner::start(self.state.tasks.clone());
        let served = crate::http::serve(self.listener, self.state, shutdown).await;
        runner.stop().await;
        served?;
        Ok(())
    }
}

/// The master keys and the blob store the configuration names (also used by the
/// operator commands `gc`, `fsck` and `rekey`).
pub fn open_blobs(config: &Config) -> anyhow::Result<BlobStore> {
    let keys = MasterKeys::from_config(
        config.masterkey.as_deref(),
        config.masterkeys.as_deref(),
        &config.data_dir,
    )?;
    if keys.is_development() {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            "NO MASTERKEY CONFIGURED: using a development master key kept in the data folder; \
             anyone who can read the folder can decrypt every blob. Set MASTERKEY for real use."
        );
    }
    Ok(BlobStore::from_config(&config.blobs, Arc::new(keys))?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

fn system_event(
    oid: Oid,
    parent: Oid,
    name: &str,
    objectpolicy: serde_json::Value,
    fulldir: String,
    checked: Tstamp,
) -> Event {
    Event {
        jwthash: hex::encode(Sha256::digest(b"")),
        checkedtstamp: checked,
        objectpolicy: Some(objectpolicy),
        ..Event::folder(oid, parent, name, fulldir)
    }
}

/// Creates the root and the namespace folder on first start (SPEC §6).
async fn bootstrap(
    store: &Store,
    engine: &PolicyEngine,
    config: &Config,
) -> anyhow::Result<Namespace> {
    let root_policy: serde_json::Value = serde_json::from_str(ROOT_POLICY)?;
    let userfield = config.namespace_userfield.clone();
    let rego = NAMESPACE_POLICY.replace("{{USERFIELD}}", &serde_json::to_string(&userfield)?);
    let ns_policy = engine
        .prepare(
            Some(&json!({"label": "namespace: one home folder per caller", "rego": rego})),
            None,
        )?
        .ok_or_else(|| anyhow::anyhow!("the namespace policy is empty"))?
        .objectpolicy;
    let ns_name = config.namespace.clone();
    let oid = store
        .write(move |ctx| -> Result<Oid, Error> {
            let root = match ctx.current(Oid::ROOT)? {
                Some(r) => r.event,
                None => {
                    let mut e = system_event(
                        Oid::ROOT,
                        Oid::NONE,
                        "1",
                        root_policy,
                        "/".into(),
                        Tstamp(0),
                    );
                    e.tstamp = ctx.next_tstamp();
                    ctx.append(&e)?;
                    e
                }
            };
            if let Some(oid) = ctx.child_by_name(Oid::ROOT, &ns_name)? {
                return Ok(oid);
            }
            let mut e = system_event(
                Oid(0),
                Oid::ROOT,
                &ns_name,
                ns_policy,
                format!("/{}/", Oid::ROOT),
                root.tstamp,
            );
            e.oid = ctx.next_oid();
            e.tstamp = ctx.next_tstamp();
            ctx.append(&e)?;
            ctx.meta_set("namespace_oid", &e.oid.to_string())?;
            Ok(e.oid)
        })
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    Ok(Namespace { oid, userfield })
}
