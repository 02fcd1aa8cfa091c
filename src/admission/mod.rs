//! The AdmissionReview wire format: [`decode`] turns a request body into a typed request
//! (or a [`DecodeError`] naming what is wrong), [`respond`] turns an evaluation into the
//! AdmissionReview answer.

pub mod decode;
pub mod respond;

pub use decode::{DecodeError, Decoded, decode};
