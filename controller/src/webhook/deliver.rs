//! Sending one outbox record: the HTTP `POST` with retries, through the egress-guarded client.
//!
//! What reaches the status when a delivery is given up is a [`Failure`]: a short, fixed text
//! about the *destination's* answer (`HTTP 404`, `timed out`, `could not connect`,
//! `destination not allowed`, …). The controller's own errors (reqwest's error chain with resolved
//! addresses, Vault's address and answers) go only to the controller's log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use jobforge_schema::tenancy::TenancyConfig;

use super::OutboxRecord;
use crate::egress::{self, EgressPolicy};
use crate::machine::webhook_event_name;
use crate::vault::VaultChecker;

/// Time limit of one attempt (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery was given up: the tenant-readable text recorded in the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The destination is not allowed ([`crate::egress`]): [`crate::egress::NOT_ALLOWED`].
    #[error("destination not allowed")]
    NotAllowed,
    /// The receiver answered a status that is not 2xx (redirects included: they are not followed).
    #[error("HTTP {0}")]
    Status(u16),
    /// No answer within [`ATTEMPT_TIMEOUT`].
    #[error("timed out")]
    Timeout,
    /// The connection failed (refused, reset, TLS).
    #[error("could not connect")]
    Connect,
    /// The URL or a header cannot be sent (validation lets none through; defence in depth).
    #[error("invalid webhook url or header")]
    Invalid,
    /// The request failed in some other way while being sent.
    #[error("request failed")]
    Request,
    /// The HMAC key at `secret_path` could not be read or has no `secret` field.
    #[error("the webhook secret at {0} could not be read (it needs a `secret` field)")]
    Secret(String),
    /// The controller has no Vault configured, so it cannot sign.
    #[error("webhook signing is not configured on this controller")]
    NoVault,
}

impl Failure {
    /// Whether a later attempt may succeed: timeouts, connection failures, 429 and 5xx, and a
    /// Vault that did not answer. A refused destination never is.
    fn retryable(&self) -> bool {
        match self {
            Failure::Status(code) => *code == 429 || *code >= 500,
            Failure::Timeout | Failure::Connect | Failure::Request => true,
            Failure::NotAllowed | Failure::Invalid | Failure::Secret(_) | Failure::NoVault => false,
        }
    }

    /// The failure a reqwest error stands for.
    fn of(err: &reqwest::Error) -> Failure {
        if egress::is_not_allowed(err) {
            Failure::NotAllowed
        } else if err.is_timeout() {
            Failure::Timeout
        } else if err.is_connect() {
            Failure::Connect
        } else if err.is_builder() {
            Failure::Invalid
        } else {
            Failure::Request
        }
    }
}

/// One attempt's error: the failure, and whether it is worth another attempt.
#[derive(Debug)]
struct AttemptError {
    failure: Failure,
    retry: bool,
}

impl From<Failure> for AttemptError {
    fn from(failure: Failure) -> Self {
        AttemptError {
            retry: failure.retryable(),
            failure,
        }
    }
}

/// The egress client of one allowlist.
struct Guarded {
    allow: Vec<String>,
    policy: Arc<EgressPolicy>,
    http: reqwest::Client,
}

/// Sends outbox records: HMAC keys from Vault, the egress-guarded HTTP client (rebuilt when
/// `tenancy.webhook_allow_cidrs` changes), retries with backoff.
pub struct Sender {
    vault: Option<Arc<VaultChecker>>,
    client: Mutex<Option<Arc<Guarded>>>,
    backoff: ExponentialBuilder,
}

impl Sender {
    /// A sender reading HMAC keys with `vault` (`None`: records with a `secret_path` fail
    /// [`Failure::NoVault`]).
    pub fn new(vault: Option<Arc<VaultChecker>>) -> Sender {
        Sender {
            vault,
            client: Mutex::new(None),
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(5)
                .with_jitter(),
        }
    }

    /// The same sender with other retry delays (tests).
    pub fn with_backoff(mut self, backoff: ExponentialBuilder) -> Sender {
        self.backoff = backoff;
        self
    }

    /// The client for `tenancy`'s allowlist: the cached one while it is unchanged, else a new
    /// one. An allowlist that does not parse (the configuration loader refuses such documents)
    /// allows nothing internal.
    fn guarded(&self, tenancy: &TenancyConfig) -> Result<Arc<Guarded>, Failure> {
        let mut cached = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = cached.as_ref()
            && g.allow == tenancy.webhook_allow_cidrs
        {
            return Ok(g.clone());
        }
        let policy = match EgressPolicy::new(&tenancy.webhook_allow_cidrs) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "tenancy.webhook_allow_cidrs: ignoring the allowlist");
                EgressPolicy::default()
            }
        };
        let policy = Arc::new(policy);
        let http = egress::client(policy.clone(), ATTEMPT_TIMEOUT).map_err(|e| {
            tracing::error!(error = %e, "building the webhook HTTP client");
            Failure::Request
        })?;
        let g = Arc::new(Guarded {
            allow: tenancy.webhook_allow_cidrs.clone(),
            policy,
            http,
        });
        *cached = Some(g.clone());
        Ok(g)
    }

    /// Sends `record` until a 2xx (`Ok`) or a final failure, retrying retryable ones with
    /// backoff; the allowlist is `tenancy`'s. The signature is computed over `record.body` with
    /// the key read now.
    pub async fn send(
        &self,
        record: &OutboxRecord,
        tenancy: &TenancyConfig,
    ) -> Result<(), Failure> {
        let client = self.guarded(tenancy)?;
        let url = reqwest::Url::parse(&record.url).map_err(|_| Failure::Invalid)?;
        // IP-literal hosts never reach the resolver: check them here (egress module docs).
        if client.policy.check_url(&url).is_err() {
            return Err(Failure::NotAllowed);
        }
        let attempt = || async {
            let signature = self.signature(record).await?;
            let mut rb = client
                .http
                .post(url.clone())
                .header("content-type", "application/json")
                .header("x-jobforge-event", webhook_event_name(record.event))
                .header("x-jobforge-delivery", record.delivery_id.as_str())
                .body(record.body.clone());
            if let Some(sig) = &signature {
                rb = rb.header("x-jobforge-signature", sig.as_str());
            }
            for (k, v) in &record.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            let resp = rb.send().await.map_err(|e| {
                let f = Failure::of(&e);
                tracing::debug!(delivery = %record.delivery_id, error = ?e, failure = %f, "webhook attempt failed");
                AttemptError::from(f)
            })?;
            let st = resp.status();
            if st.is_success() {
                Ok(())
            } else {
                Err(AttemptError::from(Failure::Status(st.as_u16())))
            }
        };
        attempt
            .retry(self.backoff)
            .when(|e: &AttemptError| e.retry)
            .await
            .map_err(|e| e.failure)
    }

    /// The signature header of `record.body`, when it has a secret path.
    async fn signature(&self, record: &OutboxRecord) -> Result<Option<String>, AttemptError> {
        let Some(path) = &record.secret_path else {
            return Ok(None);
        };
        let Some(vault) = &self.vault else {
            return Err(Failure::NoVault.into());
        };
        match vault.read_secret(path).await {
            Ok(Some(m)) => match m.get("secret") {
                Some(key) => Ok(Some(super::sign(key.as_bytes(), record.body.as_bytes()))),
                None => Err(Failure::Secret(path.clone()).into()),
            },
            Ok(None) => Err(Failure::Secret(path.clone()).into()),
            Err(e) => {
                tracing::warn!(delivery = %record.delivery_id, path = %path, error = %e, "reading the webhook secret");
                Err(AttemptError {
                    retry: e.is_transient(),
                    failure: Failure::Secret(path.clone()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::NOT_ALLOWED;
    use chrono::Utc;
    use jobforge_schema::WebhookEvent;
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn record(url: &str) -> OutboxRecord {
        OutboxRecord {
            delivery_id: "team-a/app/succeeded:7:1".into(),
            event: WebhookEvent::Succeeded,
            event_id: "succeeded:7:1".into(),
            namespace: "team-a".into(),
            name: "app".into(),
            url: url.into(),
            headers: Default::default(),
            secret_path: None,
            body: r#"{"event":"succeeded"}"#.into(),
            created_at: Utc::now(),
        }
    }

    fn fast() -> Sender {
        Sender::new(None).with_backoff(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(1))
                .with_max_delay(Duration::from_millis(2))
                .with_max_times(3),
        )
    }

    fn loopback_allowed() -> TenancyConfig {
        TenancyConfig {
            webhook_allow_cidrs: vec!["127.0.0.0/8".into()],
            ..TenancyConfig::default()
        }
    }

    #[tokio::test]
    async fn internal_destinations_are_refused_at_once_without_a_request() {
        let server = MockServer::start().await;
        let port = server.address().port();
        let s = fast();
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://localhost:{port}/hook"),
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "http://[::1]:8500/v1/kv/x".to_string(),
        ] {
            let got = s.send(&record(&url), &TenancyConfig::default()).await;
            assert_eq!(got, Err(Failure::NotAllowed), "{url}");
            assert_eq!(Failure::NotAllowed.to_string(), NOT_ALLOWED);
        }
        assert!(
            server
                .received_requests()
                .await
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_allowlisted_receiver_gets_the_body_and_the_delivery_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(header("x-jobforge-delivery", "team-a/app/succeeded:7:1"))
            .and(header("x-jobforge-event", "succeeded"))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let url = format!("http://127.0.0.1:{}/hook", server.address().port());
        fast()
            .send(&record(&url), &loopback_allowed())
            .await
            .expect("delivered");
    }

    #[tokio::test]
    async fn retryable_answers_are_retried_and_final_ones_are_not_and_nothing_internal_leaks() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .expect(4)
            .mount(&server)
            .await;
        let url = format!("http://127.0.0.1:{}/hook", server.address().port());
        let got = fast().send(&record(&url), &loopback_allowed()).await;
        assert_eq!(got, Err(Failure::Status(503)));
        server.verify().await;

        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(302).insert_header("location", "http://169.254.169.254/"),
            )
            .expect(1)
            .mount(&server)
            .await;
        let url = format!("http://127.0.0.1:{}/hook", server.address().port());
        let got = fast().send(&record(&url), &loopback_allowed()).await;
        assert_eq!(got, Err(Failure::Status(302)), "redirects are not followed");
        server.verify().await;

        // Nothing listens: the text says so without the address or the OS error.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let got = fast()
            .send(
                &record(&format!("http://127.0.0.1:{port}/")),
                &loopback_allowed(),
            )
            .await;
        assert_eq!(got, Err(Failure::Connect));
        assert_eq!(Failure::Connect.to_string(), "could not connect");
    }

    #[tokio::test]
    async fn a_secret_path_without_vault_is_a_final_plain_failure() {
        let mut r = record("http://127.0.0.1:9/hook");
        r.secret_path = Some("secret/data/jobforge/team-a/hook".into());
        let got = fast().send(&r, &loopback_allowed()).await;
        assert_eq!(got, Err(Failure::NoVault));
    }

    #[test]
    fn the_client_is_rebuilt_only_when_the_allowlist_changes() {
        let s = Sender::new(None);
        let a = s.guarded(&TenancyConfig::default()).expect("client");
        let b = s.guarded(&TenancyConfig::default()).expect("client");
        assert!(Arc::ptr_eq(&a, &b));
        let c = s.guarded(&loopback_allowed()).expect("client");
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(c.policy.permits("127.0.0.1".parse().expect("ip")));
    }
}
