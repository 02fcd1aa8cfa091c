//! The schema set in service, swapped whole on reload; a set that fails to load is refused and
//! the last good one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tracing::{error, info};

use crate::metrics::Metrics;
use crate::policy::schema::{SchemaError, SchemaSet};

pub struct SchemaStore {
    dir: PathBuf,
    current: ArcSwap<SchemaSet>,
    metrics: Arc<Metrics>,
}

impl SchemaStore {
    /// Loads and compiles the set; fails at start-up rather than serve without schemas.
    pub fn load(dir: PathBuf, metrics: Arc<Metrics>) -> Result<Self, SchemaError> {
        let set = SchemaSet::load(&dir)?;
        info!(dir = %dir.display(), default_version = set.default_version(), files = set.file_count(), "schemas loaded");
        Ok(Self { dir, current: ArcSwap::from_pointee(set), metrics })
    }

    pub fn current(&self) -> Guard<Arc<SchemaSet>> {
        self.current.load()
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Re-reads the directory; swaps in a changed set that compiles. Returns whether it changed.
    pub fn reload(&self) -> bool {
        match SchemaSet::load(&self.dir) {
            Ok(set) if set.fingerprint() == self.current.load().fingerprint() => false,
            Ok(set) => {
                info!(default_version = set.default_version(), files = set.file_count(), "schemas reloaded");
                self.current.store(Arc::new(set));
                Metrics::count_result(&self.metrics.schema_reloads, true);
                true
            }
            Err(error) => {
                error!(%error, "refused schema change; the last good set keeps serving");
                Metrics::count_result(&self.metrics.schema_reloads, false);
                false
            }
        }
    }
}
