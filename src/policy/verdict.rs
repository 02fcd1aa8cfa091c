//! The verdict on a review: the word metrics, logs, `check` reports and schema test suites use.

use serde::Deserialize;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Allowed with no warnings.
    Allowed,
    /// Allowed, with `Warning:` lines.
    Warned,
    Denied,
}

impl Verdict {
    /// Denied wins over warned, warned over allowed.
    pub fn of(denied: bool, warned: bool) -> Self {
        match (denied, warned) {
            (true, _) => Self::Denied,
            (false, true) => Self::Warned,
            (false, false) => Self::Allowed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Warned => "warned",
            Self::Denied => "denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn denial_outranks_warnings() {
        assert_eq!(Verdict::of(true, true), Verdict::Denied);
        assert_eq!(Verdict::of(false, true), Verdict::Warned);
        assert_eq!(Verdict::of(false, false).as_str(), "allowed");
    }
}
