//! Prometheus metrics. Names and labels are public API, documented in the README: keep them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lookup::Lookup;

/// The admission endpoint a review came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub endpoint: &'static str,
    pub kind: String,
    pub operation: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub rule: &'static str,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The watched kind: `ConfigMap`, `Secret`, `StatefulSet`, `Deployment`, `Job` or `VolumeSnapshot`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// The DX component, or `unknown` when the object names none this server knows.
    pub component: &'static str,
    /// One update category letter: `A`, `C`, `P`, `N` or `R`.
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub namespace: String,
    /// `core`, `dam` or `persistence`.
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    /// `statefulset/<name>` or `deployment/<name>`.
    pub workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ExistingFindingLabels {
    pub namespace: String,
    pub rule: String,
    /// `deny`, `warn` or `audit`.
    pub severity: &'static str,
}

/// Every metric dx-admission exports.
pub struct Metrics {
    registry: Registry,
    pub reviews: Family<ReviewLabels, Counter>,
    pub review_duration: Family<EndpointLabels, Histogram>,
    pub reviews_in_flight: Gauge,
    pub bad_requests: Family<RejectLabels, Counter>,
    pub findings: Family<FindingLabels, Counter>,
    pub changes: Family<ChangeLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub certificate_expiry: Gauge,
    pub schema_reloads: Family<ResultLabels, Counter>,
    pub rollouts: Family<ResultLabels, Counter>,
    pub config_cache_entries: Gauge,
    pub config_reads: Family<ResultLabels, Counter>,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub rollout_leader: Gauge,
    pub backup_completed: Family<BackupLabels, Gauge>,
    pub existing_findings: Family<ExistingFindingLabels, Gauge>,
    pub workloads_stale_config: Family<NamespaceLabels, Gauge>,
    pub pods_on_old_config: Family<WorkloadLabels, Gauge>,
    pub rollout_stuck: Family<WorkloadLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dx_admission");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by endpoint, kind, operation and verdict",
            reviews.clone(),
        );
        let review_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 25 µs to about 1.6 s.
            Histogram::new(exponential_buckets(0.000_025, 2.0, 17))
        });
        registry.register(
            "review_duration_seconds",
            "Time from a complete request body to the answer",
            review_duration.clone(),
        );
        let reviews_in_flight = Gauge::default();
        registry.register("reviews_in_flight", "Reviews being evaluated now", reviews_in_flight.clone());
        let bad_requests = Family::<RejectLabels, Counter>::default();
        registry.register("bad_requests", "Requests refused before evaluation, by reason", bad_requests.clone());
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register("findings", "Findings reported, by rule id and effective severity", findings.clone());
        let changes = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "changes",
            "Admitted changes of DX objects (not dry runs), by component and update category",
            changes.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register("tls_reloads", "Serving certificate reloads, ok or failed", tls_reloads.clone());
        let certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires",
            certificate_expiry.clone(),
        );
        let schema_reloads = Family::<ResultLabels, Counter>::default();
        registry.register("schema_reloads", "Schema set reloads, ok or failed", schema_reloads.clone());
        let rollouts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "rollouts",
            "Workload pod templates re-stamped by the rollout controller, ok or failed",
            rollouts.clone(),
        );
        let config_cache_entries = Gauge::default();
        registry.register(
            "config_cache_entries",
            "ConfigMaps and Secrets held (as digests) in the config cache",
            config_cache_entries.clone(),
        );
        let config_reads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reads",
            "Direct reads of ConfigMaps and Secrets missing from the config cache: found, absent or failed",
            config_reads.clone(),
        );
        for result in [Lookup::Found(()), Lookup::Absent, Lookup::Unreadable] {
            drop(config_reads.get_or_create(&ResultLabels { result: result.result_label() }));
        }
        let watch_errors = Family::<WatchLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Failed watch or list requests to the API server (retried with backoff), by kind",
            watch_errors.clone(),
        );
        for kind in ["ConfigMap", "Secret", "StatefulSet", "Deployment"] {
            drop(watch_errors.get_or_create(&WatchLabels { kind }));
        }
        let rollout_leader = Gauge::default();
        registry.register("rollout_leader", "1 while this replica holds the rollout Lease", rollout_leader.clone());
        let backup_completed = Family::<BackupLabels, Gauge>::default();
        registry.register(
            "backup_completed_timestamp_seconds",
            "Unix time the newest completed backup of a stateful DX component finished; 0 when there is none",
            backup_completed.clone(),
        );
        let existing_findings = Family::<ExistingFindingLabels, Gauge>::default();
        registry.register(
            "existing_findings",
            "Existing DX objects with findings of a rule, by the background evaluation (Lease holder only)",
            existing_findings.clone(),
        );
        let workloads_stale_config = Family::<NamespaceLabels, Gauge>::default();
        registry.register(
            "workloads_stale_config",
            "DX workloads whose pods do not run the current content of a ConfigMap or Secret they use (Lease holder only)",
            workloads_stale_config.clone(),
        );
        let pods_on_old_config = Family::<WorkloadLabels, Gauge>::default();
        registry.register(
            "pods_on_old_config",
            "Running pods of a DX workload that run an older pod template (Lease holder only)",
            pods_on_old_config.clone(),
        );
        let rollout_stuck = Family::<WorkloadLabels, Gauge>::default();
        registry.register(
            "rollout_stuck",
            "1 while an updated pod of a DX workload has not been Ready for longer than --rollout-stuck-after (Lease holder only)",
            rollout_stuck.clone(),
        );
        // Both results exist from the start, so a rate() over them is defined before the first event.
        for family in [&tls_reloads, &schema_reloads, &rollouts] {
            for result in ["ok", "failed"] {
                drop(family.get_or_create(&ResultLabels { result }));
            }
        }
        Self {
            registry,
            reviews,
            review_duration,
            reviews_in_flight,
            bad_requests,
            findings,
            changes,
            tls_reloads,
            certificate_expiry,
            schema_reloads,
            rollouts,
            config_cache_entries,
            config_reads,
            watch_errors,
            rollout_leader,
            backup_completed,
            existing_findings,
            workloads_stale_config,
            pods_on_old_config,
            rollout_stuck,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a failed watch or list request of `kind`.
    pub fn count_watch_error(&self, kind: &'static str) {
        self.watch_errors.get_or_create(&WatchLabels { kind }).inc();
    }

    /// Counts one evaluation in `dx_admission_reviews_in_flight` for as long as the guard lives:
    /// a review dropped mid-way (its client went away) still leaves the gauge.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.reviews_in_flight.inc();
        InFlight(&self.reviews_in_flight)
    }

    pub fn count_result(family: &Family<ResultLabels, Counter>, ok: bool) {
        family.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }
}

/// One review in flight; see [`Metrics::in_flight`].
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[tokio::test]
    async fn a_review_dropped_mid_way_leaves_the_in_flight_gauge() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let (started, wait) = tokio::sync::oneshot::channel();
        let review = tokio::spawn({
            let metrics = std::sync::Arc::clone(&metrics);
            async move {
                let _counted = metrics.in_flight();
                let _ = started.send(());
                std::future::pending::<()>().await;
            }
        });
        wait.await.unwrap();
        assert_eq!(metrics.reviews_in_flight.get(), 1);
        review.abort();
        assert!(review.await.unwrap_err().is_cancelled());
        assert_eq!(metrics.reviews_in_flight.get(), 0);
    }
}
