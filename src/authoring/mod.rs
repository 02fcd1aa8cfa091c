//! Tools for the DX team's schema authors: `schema lint`, `schema test`, `schema diff`, and the
//! report formats CI systems read (JUnit XML, SARIF).

pub mod diff;
pub mod junit;
pub mod lint;
pub mod suite;
