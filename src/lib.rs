//! dx-admission: a Kubernetes admission webhook that guards HCL DX deployments.
//!
//! The layout follows a review through the server: [`admission`] decodes an AdmissionReview and
//! builds the response, [`policy`] evaluates the object (pure), and [`server`] carries both over
//! TLS with health, metrics and hot reload around them.
#![forbid(unsafe_code)]

pub mod admission;
pub mod authoring;
pub mod catalogue;
pub mod check;
pub mod checksum;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod dev;
pub mod lookup;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod report;
pub mod server;
pub mod telemetry;
