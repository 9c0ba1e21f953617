//! Leader election with a `coordination.k8s.io/v1` Lease, so several replicas can run and only
//! one reconciles. As in client-go, a Lease counts as expired when its record has not changed
//! for a whole lease duration by this replica's own clock, so clock skew between replicas does
//! not matter.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::context::is_conflict;
use crate::error::{Error, Result};
use crate::labels::FIELD_MANAGER;
use crate::settings::LeaderElectionSettings;

/// Competes for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    retry_period: Duration,
    /// The last Lease record seen (holder, renew time) and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    /// An elector for `settings`' Lease, as `identity`.
    pub fn new(client: Client, settings: &LeaderElectionSettings, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            name: settings.lease_name.clone(),
            identity: identity.to_owned(),
            lease_duration: settings.lease_duration,
            retry_period: settings.retry_period,
            observed: Mutex::new(None),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = self.name, identity = self.identity, "became the leader");
                    return;
                }
                Ok(false) => tracing::debug!(lease = self.name, "another replica leads"),
                Err(err) => tracing::warn!(lease = self.name, error = %err, "could not read or take the Lease"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the Lease until it is lost (another replica took it, or renewals kept failing for
    /// a lease duration); then returns [`Error::LostLease`].
    pub async fn hold(&self) -> Result<()> {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return Err(Error::LostLease(self.name.clone())),
                Err(err) => {
                    tracing::warn!(lease = self.name, error = %err, "could not renew the Lease");
                    if renewed.elapsed() + self.retry_period >= self.lease_duration {
                        return Err(Error::LostLease(self.name.clone()));
                    }
                }
            }
        }
    }

    /// Gives the Lease up so that another replica takes over at once (on shutdown).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        if let Err(err) = self.api.replace(&self.name, &params, &lease).await {
            tracing::warn!(lease = self.name, error = %err, "could not release the Lease");
        }
    }

    /// One round: `true` when this replica holds the Lease afterwards. Writes use the read
    /// resourceVersion (compare-and-swap), so two replicas never both win.
    async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&params, &lease).await {
                Ok(_) => Ok(true),
                Err(err) if is_conflict(&err) => Ok(false),
                Err(err) => Err(err.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() && !self.expired(spec) {
            return Ok(false);
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match self.api.replace(&self.name, &params, &lease).await {
            Ok(_) => Ok(true),
            Err(err) if is_conflict(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the holder stopped renewing: its record has not changed for a lease duration.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let record = format!("{:?}/{:?}", spec.holder_identity, spec.renew_time.as_ref().map(|t| t.0));
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.lease_duration, Duration::from_secs);
        let mut observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        match observed.as_ref() {
            Some((seen, since)) if *seen == record => since.elapsed() > duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }
}
