//! Config checksums: which ConfigMaps and Secrets a pod template uses, a digest of exactly what
//! the pod can see of each, and the annotations (and JSON patch) that make a change roll the pods.
//!
//! Pure: the data comes in as [`SourceDigest`]s from the cache; nothing here talks to a cluster.

pub mod annotations;
pub mod consumers;
pub mod digest;
pub mod patch;
pub mod refs;

pub use consumers::{Narrowing, narrow};
pub use digest::SourceDigest;
pub use refs::{Keys, SourceKind, SourceRef, Usage, references};
