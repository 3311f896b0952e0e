//! Share-log entries POSTed to SHARE_WEBHOOK_URL (SPEC §9.6), from the outbox: each entry's
//! delivery task is queued in the entry's own transaction, so none is lost, and deliveries
//! of one share are leased one at a time in entry order. At least once: a receiver drops a
//! repeat by `X-Vellum-Id`.

use std::time::Duration;

use crate::config::WebhookConfig;
use crate::model::{Oid, Task, Tstamp};
use crate::store::Store;

use super::runner::Outcome;

/// The signature header: `sha256=` and the hex HMAC-SHA256 of the body under the secret.
pub const SIGNATURE_HEADER: &str = "X-Vellum-Signature";
/// The entry's tstamp (unique store-wide; the same on every retry of the entry).
pub const ID_HEADER: &str = "X-Vellum-Id";
/// Seconds since the epoch when this attempt was sent.
pub const TIMESTAMP_HEADER: &str = "X-Vellum-Timestamp";

pub(super) struct Sender {
    url: String,
    key: aws_lc_rs::hmac::Key,
    client: reqwest::Client,
}

impl Sender {
    pub(super) fn new(c: &WebhookConfig) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout.min(Duration::from_secs(5)))
            // A redirect could lead anywhere, plain http to another host included.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vellum/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            url: c.url.clone(),
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, c.secret.as_bytes()),
            client,
        })
    }

    pub(super) async fn deliver(&self, store: &Store, task: &Task) -> Result<Outcome, String> {
        let (share, tstamp) = parse_target(&task.target)
            .ok_or_else(|| format!("target {:?} does not name a log entry", task.target))?;
        let entry = store
            .read(move |s| s.share_log(share))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|e| e.tstamp == tstamp);
        let Some(entry) = entry else {
            return Ok(Outcome::Done("the entry is not in the log".into()));
        };
        let body = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        let sig = format!(
            "sha256={}",
            hex::encode(aws_lc_rs::hmac::sign(&self.key, &body))
        );
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resp = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sig)
            .header(ID_HEADER, tstamp.to_string())
            .header(TIMESTAMP_HEADER, sent.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("could not deliver: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            Ok(Outcome::Done(format!("delivered ({status})")))
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

fn parse_target(target: &str) -> Option<(Oid, Tstamp)> {
    let (share, tstamp) = target.split_once('/')?;
    Some((share.parse().ok()?, tstamp.parse().ok()?))
}
