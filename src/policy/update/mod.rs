//! A DX update as a whole: what one change of an object is (its update categories, what changed,
//! what Kubernetes refuses), compared in a semantic form that ignores defaults and bookkeeping.
//! Pure, like `policy`: the live path, `plan` and the tests share it.

pub mod change;
pub mod normal;

pub use change::{Categories, Category, Change, Checksums, Compared, ComponentBefore, compare};
