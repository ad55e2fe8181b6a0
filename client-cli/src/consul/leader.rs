//! Leader election on a Consul session lock, with fenced writes.
//!
//! The recipe is Consul's (`docs/dynamic-app-config/sessions/application-leader-election`) and
//! the behaviour follows hashicorp/consul `api/lock.go`:
//! - a session (TTL default 15 s, lock-delay configurable, Behavior `release`);
//! - `PUT <key>?acquire=<session>` with the candidate's identity as the value;
//! - everybody watches the key with **consistent blocking reads**; a standby tries to acquire
//!   when `Session` is empty, and after a refused acquire (lock-delay) retries after
//!   `min(lock_retry, lock_delay)` (the read that waits is itself a blocking read, so a change
//!   wakes it earlier);
//! - the holder renews every TTL/2 (adopting the TTL the server returns), retrying every 1 s until
//!   TTL has passed since the last success, then steps down; it steps down at once when a read
//!   shows another (or no) session on the key; a lost session is replaced by a new one;
//! - shutdown releases the key and destroys the session, so a standby takes over at once.
//!
//! **Fencing** ([`super::fence`], re-exported here): leadership seen locally can be stale. Every
//! write a leader makes goes through [`Fence`]: one `/v1/txn` whose first operation is
//! `check-session` on the leader key, so Consul refuses it unless this session holds the lock
//! at commit time.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agent::ServiceRegistration;
use super::client::Client;
use super::error::{ConsulError, Result};
use super::kv::{PutOptions, QueryOptions, key_arg};
use super::session::{
    MAX_LOCK_DELAY, MAX_SESSION_TTL, MIN_SESSION_TTL, SessionBehavior, SessionRequest,
};
use super::txn::TxnOp;
use super::watch::next_index;

pub use super::fence::{Fence, FencedDelete, FencedTxn, FencedWrite};

/// Settings of a [`Leadership`].
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The leader key, e.g. `jobforge/leader`.
    pub key: String,
    /// Value written to the key on acquire (identifies the holder to others), e.g. JSON.
    pub identity: Vec<u8>,
    /// Session name (default `jobforge-leader`).
    pub session_name: String,
    /// Session TTL, 10 s..86400 s (default 15 s, as `api.Lock`).
    pub ttl: Duration,
    /// Session lock-delay, ≤ 60 s (default 15 s, Consul's default).
    pub lock_delay: Duration,
    /// Blocking `wait` of the key reads (default 15 s, `api.Lock`'s LockWaitTime).
    pub monitor_wait: Duration,
    /// Longest pause before retrying a refused acquire (default 5 s, `api.Lock`'s
    /// DefaultLockRetryTime); the pause is `min(lock_retry, lock_delay)`.
    pub lock_retry: Duration,
    /// Pause between failed renewals (default 1 s).
    pub renew_retry: Duration,
    /// This candidate's service registration (default none). When set, the candidate
    /// (re-)registers it with the local agent before creating each session, binds the session
    /// to the registration's check (`ServiceChecks`), so Consul invalidates the session — and
    /// frees the key — as soon as the check turns critical (a crashed or hung candidate is
    /// noticed within one check interval plus timeout, not after up to 2×TTL), and deregisters
    /// it on shutdown after releasing the key.
    pub service: Option<ServiceRegistration>,
}

impl LeaderConfig {
    /// Defaults for `key` with `identity` as the lock value.
    pub fn new(key: impl Into<String>, identity: impl Into<Vec<u8>>) -> LeaderConfig {
        LeaderConfig {
            key: key.into(),
            identity: identity.into(),
            session_name: "jobforge-leader".to_string(),
            ttl: Duration::from_secs(15),
            lock_delay: Duration::from_secs(15),
            monitor_wait: Duration::from_secs(15),
            lock_retry: Duration::from_secs(5),
            renew_retry: Duration::from_secs(1),
            service: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field, message: String| Err(ConsulError::InvalidArgument { field, message });
        key_arg("key", &self.key)?;
        if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&self.ttl) {
            return bad(
                "ttl",
                format!("{:?} is outside Consul's 10s..86400s", self.ttl),
            );
        }
        if self.lock_delay > MAX_LOCK_DELAY {
            return bad("lock_delay", format!("{:?} exceeds 60s", self.lock_delay));
        }
        if self.monitor_wait.is_zero() || self.renew_retry.is_zero() || self.lock_retry.is_zero() {
            return bad(
                "monitor_wait/lock_retry/renew_retry",
                "must be greater than zero".to_string(),
            );
        }
        Ok(())
    }

    fn acquire_retry(&self) -> Duration {
        // A little past the lock-delay, so the retry does not land just before it ends.
        self.lock_retry
            .min(self.lock_delay + Duration::from_millis(50))
    }
}

/// What a candidate currently is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderState {
    /// No session yet (or creating a replacement).
    Starting,
    /// This candidate holds the leader key with `session`.
    Leader {
        /// Our session ID.
        session: String,
    },
    /// Another candidate (or nobody) holds the key.
    Standby {
        /// Our session ID.
        session: String,
        /// The holder's identity (the key's value), when the key is held.
        leader_identity: Option<Vec<u8>>,
    },
    /// Shut down.
    Stopped,
}

impl LeaderState {
    /// True for [`LeaderState::Leader`].
    pub fn is_leader(&self) -> bool {
        matches!(self, LeaderState::Leader { .. })
    }

    /// Our session, when we have one.
    pub fn session(&self) -> Option<&str> {
        match self {
            LeaderState::Leader { session } | LeaderState::Standby { session, .. } => Some(session),
            _ => None,
        }
    }
}

/// A running candidate. See the module docs for the protocol.
///
/// Dropping it cancels the campaign; the background task then releases the key and destroys
/// the session on its own. Prefer [`Leadership::shutdown`], which waits for that.
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    key: String,
    state: watch::Receiver<LeaderState>,
    contact: watch::Receiver<Option<Instant>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Starts campaigning for `cfg.key` in a background task, until `cancel` (or shutdown).
    ///
    /// Errors: `InvalidArgument` naming the config field (empty key, TTL outside 10 s..86400 s,
    /// lock-delay over 60 s, zero waits). Consul errors never end the campaign; they are
    /// retried with backoff.
    pub fn start(
        client: Client,
        cfg: LeaderConfig,
        cancel: CancellationToken,
    ) -> Result<Leadership> {
        cfg.validate()?;
        let (tx, rx) = watch::channel(LeaderState::Starting);
        let (contact_tx, contact) = watch::channel(None);
        let cancel = cancel.child_token();
        let key = key_arg("key", &cfg.key)?.to_string();
        let campaign = Campaign {
            client: client.clone(),
            key: key.clone(),
            cfg,
            state: tx,
            contact: contact_tx,
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(campaign.run());
        Ok(Leadership {
            client,
            key,
            state: rx,
            contact,
            cancel,
            task: Some(task),
        })
    }

    /// True while this candidate holds the key (as last observed).
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_leader()
    }

    /// The current state.
    pub fn state(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    /// When Consul last answered the campaign (a session created or renewed, a read of the key):
    /// at least every TTL/2 while Consul answers, since every candidate renews its session that
    /// often. A receiver notified on each answer.
    pub fn contact(&self) -> watch::Receiver<Option<Instant>> {
        self.contact.clone()
    }

    /// A receiver notified on every state change.
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.state.clone()
    }

    /// Our current session, if any.
    pub fn session_id(&self) -> Option<String> {
        self.state.borrow().session().map(str::to_string)
    }

    /// The leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A [`Fence`] for the current session (`None` before the first session exists).
    pub fn fence(&self) -> Option<Fence> {
        self.session_id()
            .map(|s| Fence::new(self.client.clone(), self.key.clone(), s))
    }

    fn leader_fence(&self) -> Option<Fence> {
        match &*self.state.borrow() {
            LeaderState::Leader { session } => Some(Fence::new(
                self.client.clone(),
                self.key.clone(),
                session.clone(),
            )),
            _ => None,
        }
    }

    /// [`Fence::cas_put`] with the current session; `NotLeader` at once when this candidate is
    /// not the leader locally.
    pub async fn fenced_cas_put(
        &self,
        key: &str,
        value: &[u8],
        modify_index: u64,
    ) -> Result<FencedWrite> {
        match self.leader_fence() {
            Some(f) => f.cas_put(key, value, modify_index).await,
            None => Ok(FencedWrite::NotLeader),
        }
    }

    /// [`Fence::delete`] with the current session; `NotLeader` at once when not the leader.
    pub async fn fenced_delete(&self, key: &str, cas: Option<u64>) -> Result<FencedDelete> {
        match self.leader_fence() {
            Some(f) => f.delete(key, cas).await,
            None => Ok(FencedDelete::NotLeader),
        }
    }

    /// [`Fence::txn`] with the current session; `NotLeader` at once when not the leader.
    pub async fn fenced_txn(&self, ops: &[TxnOp]) -> Result<FencedTxn> {
        match self.leader_fence() {
            Some(f) => f.txn(ops).await,
            None => Ok(FencedTxn::NotLeader),
        }
    }

    /// Stops campaigning: steps down, releases the key (no lock-delay on release) and destroys
    /// the session, then returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the task at once **without** releasing the key or destroying the session, as a
    /// crash would: renewals stop and Consul frees the key after the session TTL (up to 2×TTL)
    /// plus lock-delay. For failover tests and emergency exits.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel.cancel();
        }
    }
}

struct Campaign {
    client: Client,
    key: String,
    cfg: LeaderConfig,
    state: watch::Sender<LeaderState>,
    contact: watch::Sender<Option<Instant>>,
    cancel: CancellationToken,
}

enum Lost {
    Session,
}

impl Campaign {
    /// Consul answered (see [`Leadership::contact`]).
    fn answered(&self) {
        self.contact.send_replace(Some(Instant::now()));
    }

    fn set(&self, new: LeaderState) {
        self.state.send_if_modified(|s| {
            if *s == new {
                false
            } else {
                match (&*s, &new) {
                    (LeaderState::Leader { .. }, LeaderState::Leader { .. }) => {}
                    (LeaderState::Leader { .. }, _) => {
                        tracing::info!(key = %self.key, "stepping down as leader")
                    }
                    (_, LeaderState::Leader { .. }) => {
                        tracing::info!(key = %self.key, "became leader")
                    }
                    _ => {}
                }
                *s = new;
                true
            }
        });
    }

    fn backoff() -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times()
            .build()
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    async fn run(self) {
        let mut backoff = Self::backoff();
        while !self.cancel.is_cancelled() {
            // The check must exist (and not be critical) before a session can list it.
            let mut bound_check = None;
            if let Some(svc) = &self.cfg.service {
                let registered = tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    r = self.client.agent_service_register(svc) => r,
                };
                match registered {
                    Ok(()) => bound_check = Some(svc.check_id()),
                    // Consul did not answer: a session cannot be created either; retry.
                    Err(e) if e.is_transient() && e.status_code().is_none() => {
                        let d = backoff.next().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(error = %e, retry_in = ?d, service = %svc.id, "registering this replica's service failed");
                        self.pause(d).await;
                        continue;
                    }
                    // Refused (no service:write, an invalid definition): campaign anyway, with a
                    // session that only the TTL ends, rather than never lead.
                    Err(e) => {
                        metrics::counter!("jobforge_service_registration_failures_total")
                            .increment(1);
                        tracing::error!(error = %e, service = %svc.id, "registering this replica's service was refused; the leader session is not bound to a health check, so failover waits for the session TTL");
                    }
                }
            }
            let req = SessionRequest {
                name: Some(self.cfg.session_name.clone()),
                ttl: Some(self.cfg.ttl),
                lock_delay: Some(self.cfg.lock_delay),
                behavior: SessionBehavior::Release,
                service_checks: bound_check.into_iter().collect(),
                ..SessionRequest::default()
            };
            let created = tokio::select! {
                _ = self.cancel.cancelled() => break,
                r = self.client.session_create(&req) => r,
            };
            let session = match created {
                Ok(s) => s,
                Err(e) => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in = ?d, "creating the leader session failed");
                    self.pause(d).await;
                    continue;
                }
            };
            backoff = Self::backoff();
            self.answered();
            self.set(LeaderState::Standby {
                session: session.clone(),
                leader_identity: None,
            });
            let lost = tokio::select! {
                _ = self.cancel.cancelled() => None,
                Lost::Session = self.campaign(&session) => Some(()),
                Lost::Session = self.renew(&session) => Some(()),
            };
            if lost.is_none() {
                self.resign(&session).await;
                break;
            }
            tracing::warn!(key = %self.key, %session, "leader session lost; creating a new one");
            self.set(LeaderState::Starting);
            // Best effort: if the session still exists (renewals failed on our side), free the key.
            if let Err(e) = self.client.session_destroy(&session).await {
                tracing::debug!(error = %e, "destroying the lost session failed");
            }
        }
        // Shutdown (also before any session existed): the service goes after the key.
        self.deregister().await;
        self.set(LeaderState::Stopped);
    }

    /// Steps down, releases the key if held, destroys the session.
    async fn resign(&self, session: &str) {
        let was_leader = self.state.borrow().is_leader();
        self.set(LeaderState::Stopped);
        if was_leader {
            let release = PutOptions {
                release: Some(session.to_string()),
                ..PutOptions::default()
            };
            if let Err(e) = self
                .client
                .kv_put(&self.key, &self.cfg.identity, release)
                .await
            {
                tracing::warn!(error = %e, "releasing the leader key failed");
            }
        }
        if let Err(e) = self.client.session_destroy(session).await {
            tracing::warn!(error = %e, "destroying the leader session failed");
        }
    }

    /// Removes this candidate's service from the agent (after the key is released, so the
    /// check's removal cannot invalidate a session that still holds it).
    async fn deregister(&self) {
        if let Some(svc) = &self.cfg.service
            && let Err(e) = self.client.agent_service_deregister(&svc.id).await
        {
            tracing::warn!(error = %e, service = %svc.id, "deregistering this replica's service failed");
        }
    }

    /// Watches the key and acquires it when free. Returns only when the session is gone.
    async fn campaign(&self, session: &str) -> Lost {
        let mut index = 0;
        let mut wait = self.cfg.monitor_wait;
        let mut backoff = Self::backoff();
        loop {
            let q = QueryOptions::blocking(index, wait).consistent();
            let (got, pair) = match self.client.kv_get(&self.key, q).await {
                Ok(v) => v,
                Err(e) => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in = ?d, "reading the leader key failed");
                    tokio::time::sleep(d).await;
                    continue;
                }
            };
            backoff = Self::backoff();
            self.answered();
            index = next_index(index, got);
            wait = self.cfg.monitor_wait;
            match pair.as_ref().and_then(|p| p.session.as_deref()) {
                Some(holder) if holder == session => self.set(LeaderState::Leader {
                    session: session.to_string(),
                }),
                Some(_) => self.set(LeaderState::Standby {
                    session: session.to_string(),
                    leader_identity: pair.map(|p| p.value),
                }),
                None => {
                    self.set(LeaderState::Standby {
                        session: session.to_string(),
                        leader_identity: None,
                    });
                    let acquire = PutOptions {
                        acquire: Some(session.to_string()),
                        ..PutOptions::default()
                    };
                    match self
                        .client
                        .kv_put(&self.key, &self.cfg.identity, acquire)
                        .await
                    {
                        Ok(true) => self.set(LeaderState::Leader {
                            session: session.to_string(),
                        }),
                        // Lock-delay or a lost race: look again soon (a change wakes us earlier).
                        Ok(false) => wait = self.cfg.acquire_retry(),
                        Err(e) if !e.is_transient() || e.status_code().is_some() => {
                            // An invalid session is an error, not false (Consul kvs_endpoint).
                            match self.client.session_info(session).await {
                                Ok(None) => return Lost::Session,
                                _ => {
                                    tracing::warn!(error = %e, "acquiring the leader key failed");
                                    wait = self.cfg.acquire_retry();
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "acquiring the leader key failed");
                            wait = self.cfg.acquire_retry();
                        }
                    }
                }
            }
        }
    }

    /// Renews every TTL/2; returns when the session is gone or TTL passed since the last
    /// successful renewal.
    async fn renew(&self, session: &str) -> Lost {
        let mut ttl = self.cfg.ttl;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep_until(last_ok + ttl / 2).await;
            loop {
                let deadline = last_ok + ttl;
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(%session, "no successful renewal within the TTL");
                    return Lost::Session;
                }
                match tokio::time::timeout(deadline - now, self.client.session_renew(session)).await
                {
                    Ok(Ok(Some(info))) => {
                        if let Some(t) = info.ttl.filter(|t| !t.is_zero()) {
                            ttl = t;
                        }
                        last_ok = Instant::now();
                        self.answered();
                        break;
                    }
                    Ok(Ok(None)) => {
                        tracing::warn!(%session, "session no longer exists");
                        return Lost::Session;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "renewing the leader session failed");
                        let next = (Instant::now() + self.cfg.renew_retry).min(deadline);
                        tokio::time::sleep_until(next).await;
                    }
                    Err(_) => return Lost::Session,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_outside_consul_limits_is_refused_naming_the_field() {
        let mut c = LeaderConfig::new("jobforge/leader", b"me".to_vec());
        assert!(c.validate().is_ok());
        c.ttl = Duration::from_secs(5);
        assert!(c.validate().unwrap_err().to_string().contains("ttl"));
        let mut c = LeaderConfig::new("jobforge/leader", b"me".to_vec());
        c.lock_delay = Duration::from_secs(61);
        assert!(c.validate().unwrap_err().to_string().contains("lock_delay"));
        let c = LeaderConfig::new("", b"me".to_vec());
        assert!(c.validate().unwrap_err().to_string().contains("key"));
    }

    #[test]
    fn acquire_retry_is_just_past_the_lock_delay_capped_at_lock_retry() {
        let mut c = LeaderConfig::new("k", b"me".to_vec());
        assert_eq!(c.acquire_retry(), Duration::from_secs(5));
        c.lock_delay = Duration::from_secs(1);
        assert_eq!(c.acquire_retry(), Duration::from_millis(1050));
    }
}
