//! Evaluate: decides what is wrong with a DX object. Pure: no HTTP, no kube client, no I/O; what
//! it knows of the cluster comes in as [`facts::ClusterFacts`], answered from memory.
//!
//! The server, the offline `check` command and the tests all call [`evaluate`].

pub mod annotations;
pub mod evaluate;
pub mod facts;
pub mod finding;
pub mod object;
pub mod operation;
pub mod path;
pub mod rules;
pub mod schema;
pub mod settings;
pub mod update;
pub mod values;
pub mod verdict;

pub use evaluate::{Evaluation, Policy, Review, evaluate};
pub use facts::ClusterFacts;
pub use finding::{Finding, Judged};
pub use object::{Component, Identity, Object, PodTemplate, ResourceKind};
pub use operation::Operation;
pub use settings::{Settings, Severity};
pub use verdict::Verdict;
