//! Go-style durations (`30s`, `1h30m`, `250ms`), the form DX and Kubernetes tooling use.

use std::fmt;
use std::str::FromStr;

/// A parsed duration in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    nanos: i128,
}

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty")]
    Empty,
    #[error("is not a duration such as 30s, 5m or 1h30m")]
    Syntax,
    #[error("has a number without a unit (use ns, us, ms, s, m or h)")]
    MissingUnit,
    #[error("has an unknown unit {0:?} (use ns, us, ms, s, m or h)")]
    Unit(String),
    #[error("is too large")]
    Overflow,
}

impl Duration {
    /// The duration in nanoseconds.
    pub fn as_nanos(self) -> i128 {
        self.nanos
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (negative, mut rest) = match text.as_bytes().first() {
            None => return Err(DurationError::Empty),
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            Some(_) => (false, text),
        };
        if rest == "0" {
            return Ok(Self { nanos: 0 });
        }
        if rest.is_empty() {
            return Err(DurationError::Syntax);
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let number = &rest[..number_len];
            rest = &rest[number_len..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(DurationError::Syntax);
            }
            let scale: i128 = match unit {
                "" => return Err(DurationError::MissingUnit),
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                other => return Err(DurationError::Unit(other.to_owned())),
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| DurationError::Overflow)? };
            let mut part = whole.checked_mul(scale).ok_or(DurationError::Overflow)?;
            // Fractions beyond nanosecond precision are dropped, as Go does.
            let mut place = scale;
            for digit in fraction.bytes().take(30) {
                place /= 10;
                part += i128::from(digit - b'0') * place;
            }
            total = total.checked_add(part).ok_or(DurationError::Overflow)?;
            if total > i128::from(i64::MAX) {
                return Err(DurationError::Overflow);
            }
        }
        Ok(Self { nanos: if negative { -total } else { total } })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.nanos as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> i128 {
        text.parse::<Duration>().unwrap_or_else(|e| panic!("{text}: {e}")).as_nanos()
    }

    #[test]
    fn parses_go_durations() {
        let s = 1_000_000_000i128;
        for (text, nanos) in [
            ("0", 0),
            ("30s", 30 * s),
            ("5m", 300 * s),
            ("1h30m", 5_400 * s),
            ("250ms", s / 4),
            ("1.5s", 3 * s / 2),
            (".5s", s / 2),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("7ns", 7),
            ("-2s", -2 * s),
        ] {
            assert_eq!(d(text), nanos, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for (text, error) in [
            ("", DurationError::Empty),
            ("30", DurationError::MissingUnit),
            ("5 m", DurationError::Unit(" m".into())),
            ("1d", DurationError::Unit("d".into())),
            ("s", DurationError::Syntax),
            ("1..2s", DurationError::Syntax),
            ("-", DurationError::Syntax),
            ("9999999999999h", DurationError::Overflow),
        ] {
            assert_eq!(text.parse::<Duration>(), Err(error), "{text:?}");
        }
    }
}
