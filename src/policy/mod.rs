//! Evaluate: decides what is wrong with a DX object. Pure: no HTTP, no kube client, no I/O.
//!
//! The server, the offline `check` command and the tests all call [`evaluate`].

pub mod annotations;
pub mod evaluate;
pub mod finding;
pub mod object;
pub mod path;
pub mod rules;
pub mod schema;
pub mod settings;
pub mod values;

pub use evaluate::{Evaluation, Operation, Policy, Review, evaluate};
pub use finding::{Finding, Judged};
pub use object::{Component, Identity, Object, ResourceKind};
pub use settings::{Settings, Severity};
