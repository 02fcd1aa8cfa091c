//! Cluster facts: what a rule may know of the cluster beyond the object under review. They are
//! read-only lookups answered from memory — the server's watch-fed caches, or nothing offline —
//! so a rule never performs I/O. A rule whose fact is [`Lookup::Unreadable`] says it could not
//! judge (a warning at most), it never passes in silence.
//!
//! A new fact is a method here, an answer in each implementation (the server's in
//! `src/cluster/facts.rs`), and a [`Fact`] for the catalogue.

use super::object::Component;
use crate::checksum::SourceRef;
use crate::lookup::Lookup;

/// The facts a rule may read.
pub trait ClusterFacts: Sync {
    /// The workloads of `namespace` that cannot start without `source` (references without
    /// `optional: true`), as `Kind namespace/name`, sorted. `Absent` when none does.
    fn workloads_requiring(&self, namespace: &str, source: &SourceRef) -> Lookup<Vec<String>>;

    /// The DX workloads of `component` in `namespace`, as `Kind namespace/name`, sorted. `Absent`
    /// when there is none.
    fn dx_workloads(&self, namespace: &str, component: Component) -> Lookup<Vec<String>>;

    /// The completed backups of `component` in `namespace`: Jobs and VolumeSnapshots labelled
    /// `dx.hcl.com/backup-of` with the component or `all`. `Absent` when there is none.
    fn backups(&self, namespace: &str, component: Component) -> Lookup<Vec<Backup>>;

    /// The time now (Unix seconds), to judge a backup's age.
    fn now(&self) -> i64;

    /// Why facts are unreadable here, for the finding that says so (`not judged: ...`).
    fn unreadable_because(&self) -> &'static str;
}

/// A completed backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// `Job namespace/name` or `VolumeSnapshot namespace/name`.
    pub name: String,
    /// When it completed (a Job's `completionTime`, a snapshot's `creationTime`), Unix seconds.
    pub completed: i64,
    /// The claim a VolumeSnapshot was taken of; `None` for Jobs (which back up what they are told).
    pub claim: Option<String>,
}

/// A fact a rule reads, as the catalogue documents it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    WorkloadsRequiring,
    Backups,
}

impl Fact {
    pub fn describe(self) -> &'static str {
        match self {
            Self::WorkloadsRequiring => {
                "which workloads need a ConfigMap or Secret (the workload index of `--cluster`)"
            }
            Self::Backups => {
                "the completed backup Jobs and VolumeSnapshots labelled `dx.hcl.com/backup-of` (the watch of `--cluster`)"
            }
        }
    }
}

/// No cluster to ask: every fact is unreadable, for the reason given.
pub struct NoCluster(pub &'static str);

/// Offline evaluation (`check`, `post-render`, schema suites, benchmarks).
pub const OFFLINE: NoCluster = NoCluster("no cluster is connected");

impl ClusterFacts for NoCluster {
    fn workloads_requiring(&self, _: &str, _: &SourceRef) -> Lookup<Vec<String>> {
        Lookup::Unreadable
    }

    fn dx_workloads(&self, _: &str, _: Component) -> Lookup<Vec<String>> {
        Lookup::Unreadable
    }

    fn backups(&self, _: &str, _: Component) -> Lookup<Vec<Backup>> {
        Lookup::Unreadable
    }

    fn now(&self) -> i64 {
        unix_now()
    }

    fn unreadable_because(&self) -> &'static str {
        self.0
    }
}

/// The system clock, as Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
