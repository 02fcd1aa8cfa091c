//! What looking something up in the cluster found. One type for the digest cache's reads, the
//! checksum stamp and the cluster facts rules read, so "absent" and "could not be asked" are never
//! confused: the first is an answer, the second is not.

/// The outcome of one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// The cluster (or the manifests standing in for it) says it does not exist.
    Absent,
    /// Nobody could say: the API server did not answer, the cache has not listed yet, or there
    /// is no cluster to ask. Whoever needed the answer says so instead of guessing.
    Unreadable,
}

impl<T> Lookup<T> {
    pub fn as_ref(&self) -> Lookup<&T> {
        match self {
            Self::Found(value) => Lookup::Found(value),
            Self::Absent => Lookup::Absent,
            Self::Unreadable => Lookup::Unreadable,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Self::Found(value) => Lookup::Found(f(value)),
            Self::Absent => Lookup::Absent,
            Self::Unreadable => Lookup::Unreadable,
        }
    }

    /// The `result` label of `dx_admission_config_reads_total` (stable API).
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::Found(_) => "found",
            Self::Absent => "absent",
            Self::Unreadable => "failed",
        }
    }
}
