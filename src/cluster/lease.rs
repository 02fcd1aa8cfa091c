//! Leader election with a `coordination.k8s.io/v1` Lease: one replica runs the rollout
//! controller. The holder renews every `LEASE/3`; another replica takes over once a Lease has not
//! been renewed for `LEASE`; a holder whose renewal fails or gets no answer steps down at once; a
//! replica that stops cleanly releases the Lease at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ClusterConfig;
use crate::metrics::Metrics;

const LEASE: Duration = Duration::from_secs(15);
/// Renewals start every `LEASE/3`; one that has not succeeded within this has failed. A holder
/// last renewed at t therefore steps down by t + 2·LEASE/3, before a rival may take over at
/// t + LEASE.
const RENEW_DEADLINE: Duration = Duration::from_secs(5);

pub struct LeaderElection {
    leading: AtomicBool,
    changes: watch::Sender<bool>,
    identity: String,
    /// Cancelled once the election loop has ended (and released the Lease if it held it).
    finished: CancellationToken,
    metrics: Arc<Metrics>,
}

impl LeaderElection {
    pub fn start(client: Client, config: &ClusterConfig, metrics: Arc<Metrics>, stop: CancellationToken) -> Arc<Self> {
        let (changes, _) = watch::channel(false);
        let election = Arc::new(Self {
            leading: AtomicBool::new(false),
            changes,
            identity: config.identity.clone(),
            finished: CancellationToken::new(),
            metrics,
        });
        let api = Api::<Lease>::namespaced(client, &config.lease_namespace);
        let name = config.lease_name.clone();
        let run = Arc::clone(&election);
        tokio::spawn(async move {
            loop {
                // A renewal that hangs (an API server that does not answer) counts as failed: the
                // holder steps down before its Lease can expire and a rival take it.
                let leading = match tokio::time::timeout(RENEW_DEADLINE, run.try_acquire(&api, &name)).await {
                    Ok(Ok(leading)) => leading,
                    Ok(Err(error)) => {
                        warn!(%error, lease = %name, "lease renewal failed");
                        false
                    }
                    Err(_) => {
                        warn!(lease = %name, deadline = ?RENEW_DEADLINE, "lease renewal got no answer in time");
                        false
                    }
                };
                run.set(leading);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(LEASE / 3) => {}
                }
            }
            if run.is_leader() {
                if let Err(error) = run.release(&api, &name).await {
                    warn!(%error, "could not release the lease");
                }
                run.set(false);
            }
            run.finished.cancel();
        });
        election
    }

    /// Completes once the election has stopped, after releasing a held Lease.
    pub async fn stopped(&self) {
        self.finished.cancelled().await;
    }

    fn set(&self, leading: bool) {
        if self.leading.swap(leading, Ordering::SeqCst) != leading {
            info!(identity = %self.identity, leading, "rollout leadership changed");
            self.metrics.rollout_leader.set(i64::from(leading));
            self.changes.send_replace(leading);
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Notified whenever leadership changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    async fn try_acquire(&self, api: &Api<Lease>, name: &str) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
                spec: Some(self.held_spec(now, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE.as_secs() as i32));
        let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
        let expired = holder.is_empty() || renewed + duration < now.as_second();
        if holder != self.identity && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        let mut held = self.held_spec(now, transitions);
        if holder == self.identity {
            held.acquire_time = spec.acquire_time.or(held.acquire_time);
        }
        lease.spec = Some(held);
        // The resourceVersion in `lease` makes this a compare-and-swap: a rival's write wins.
        match api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn held_spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    async fn release(&self, api: &Api<Lease>, name: &str) -> Result<(), kube::Error> {
        let Some(mut lease) = api.get_opt(name).await? else { return Ok(()) };
        if let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(&self.identity)
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            api.replace(name, &PostParams::default(), &lease).await?;
            info!(identity = %self.identity, "released the rollout lease");
        }
        Ok(())
    }
}
