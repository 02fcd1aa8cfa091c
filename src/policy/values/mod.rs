//! Parsers for the typed values DX configuration and workloads carry as strings.
//!
//! Each parser is strict, total (never panics) and returns a typed error whose `Display` is
//! a phrase that reads well after the offending value in a finding.

pub mod duration;
pub mod image;
pub mod quantity;
pub mod version;

pub use duration::Duration;
pub use image::ImageRef;
pub use quantity::Quantity;
