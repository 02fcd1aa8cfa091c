//! The cluster facts rules read, answered from the watch-fed workload index: never an API call.

use super::{Cluster, SourceKey};
use crate::checksum::SourceRef;
use crate::lookup::Lookup;
use crate::policy::Component;
use crate::policy::facts::{Backup, ClusterFacts, unix_now};

impl ClusterFacts for Cluster {
    fn workloads_requiring(&self, namespace: &str, source: &SourceRef) -> Lookup<Vec<String>> {
        if !self.workloads.is_synced() {
            return Lookup::Unreadable;
        }
        let key = SourceKey { namespace: namespace.to_owned(), source: source.clone() };
        let users: Vec<String> = self.workloads.required_by(&key).iter().map(ToString::to_string).collect();
        if users.is_empty() { Lookup::Absent } else { Lookup::Found(users) }
    }

    fn dx_workloads(&self, namespace: &str, component: Component) -> Lookup<Vec<String>> {
        if !self.workloads.is_synced() {
            return Lookup::Unreadable;
        }
        let found: Vec<String> =
            self.workloads.of_component(namespace, component).iter().map(ToString::to_string).collect();
        if found.is_empty() { Lookup::Absent } else { Lookup::Found(found) }
    }

    fn backups(&self, namespace: &str, component: Component) -> Lookup<Vec<Backup>> {
        if !self.backups.is_synced() {
            return Lookup::Unreadable;
        }
        let found = self.backups.completed(namespace, component);
        if found.is_empty() { Lookup::Absent } else { Lookup::Found(found) }
    }

    fn now(&self) -> i64 {
        unix_now()
    }

    fn unreadable_because(&self) -> &'static str {
        "the watches of workloads and backups have not listed the cluster yet"
    }
}
