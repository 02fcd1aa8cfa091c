//! Kubernetes resource quantities (`500m`, `1Gi`, `1.5`, `2e3`), compared numerically.
//!
//! The API server canonicalises quantities (`1024Mi` arrives as `1Gi`), so two quantities
//! are only ever compared by value, never as text.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed quantity, held exactly as a count of nano-units (1e-9).
///
/// Fractions of a nano-unit round up, as Kubernetes does. The largest quantity a cluster
/// accepts (about 9.2e18) fits with room to spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("is empty")]
    Empty,
    #[error("is not a number with an optional unit suffix (e.g. 500m, 2Gi, 1.5)")]
    Syntax,
    #[error("has an unknown unit suffix {0:?} (use n, u, m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei)")]
    Suffix(String),
    #[error("is too large")]
    Overflow,
}

impl Quantity {
    /// The quantity as nano-units.
    pub fn as_nanos(self) -> i128 {
        self.nanos
    }

    /// The quantity as a float, for display and coarse comparisons only.
    pub fn as_f64(self) -> f64 {
        self.nanos as f64 / 1e9
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };
        // Digits with at most one decimal point: mantissa * 10^-fraction_digits.
        let mut mantissa: i128 = 0;
        let mut fraction_digits: i32 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while pos < bytes.len() {
            match bytes[pos] {
                b'0'..=b'9' => {
                    seen_digit = true;
                    mantissa = mantissa
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(i128::from(bytes[pos] - b'0')))
                        .ok_or(QuantityError::Overflow)?;
                    if seen_point {
                        fraction_digits += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            pos += 1;
        }
        if !seen_digit {
            return Err(QuantityError::Syntax);
        }
        let (exp10, exp2) = parse_suffix(&text[pos..])?;
        let mut nanos = mantissa;
        let exp10 = exp10 + 9 - fraction_digits;
        nanos = scale_pow2(nanos, exp2)?;
        nanos = scale_pow10(nanos, exp10)?;
        Ok(Self { nanos: if negative { -nanos } else { nanos } })
    }
}

/// Splits a suffix into powers of ten and two.
fn parse_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    let decimal = |e| Ok((e, 0));
    let binary = |e| Ok((0, e));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(|| QuantityError::Suffix(suffix.to_owned()))?;
            let value: i32 = exponent.parse().map_err(|_| QuantityError::Syntax)?;
            if !(-40..=40).contains(&value) {
                return Err(QuantityError::Overflow);
            }
            decimal(value)
        }
    }
}

fn scale_pow2(value: i128, exp2: u32) -> Result<i128, QuantityError> {
    value.checked_mul(1i128 << exp2).ok_or(QuantityError::Overflow)
}

fn scale_pow10(value: i128, exp10: i32) -> Result<i128, QuantityError> {
    if exp10 >= 0 {
        let factor = 10i128.checked_pow(exp10.unsigned_abs()).ok_or(QuantityError::Overflow)?;
        value.checked_mul(factor).ok_or(QuantityError::Overflow)
    } else {
        // Below one nano-unit: round up, so a tiny non-zero request never compares as zero.
        let divisor = 10i128.checked_pow(exp10.unsigned_abs());
        Ok(match divisor {
            Some(d) => (value + d - 1) / d,
            None => i128::from(value > 0),
        })
    }
}

impl PartialOrd<i128> for Quantity {
    fn partial_cmp(&self, other: &i128) -> Option<Ordering> {
        self.nanos.partial_cmp(other)
    }
}

impl PartialEq<i128> for Quantity {
    fn eq(&self, other: &i128) -> bool {
        self.nanos == *other
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> i128 {
        text.parse::<Quantity>().unwrap_or_else(|e| panic!("{text}: {e}")).as_nanos()
    }

    #[test]
    fn parses_every_suffix_family() {
        let g = 1_000_000_000i128;
        for (text, nanos) in [
            ("1", g),
            ("0", 0),
            ("500m", g / 2),
            ("0.5", g / 2),
            (".5", g / 2),
            ("100m", g / 10),
            ("0.1", g / 10),
            ("1n", 1),
            ("2u", 2_000),
            ("1k", 1_000 * g),
            ("128M", 128_000_000 * g),
            ("1Ki", 1024 * g),
            ("1Gi", 1_073_741_824 * g),
            ("1024Mi", 1_073_741_824 * g),
            ("0.5Gi", 536_870_912 * g),
            ("2e3", 2_000 * g),
            ("2E-3", 2_000_000),
            ("+1", g),
            ("-1", -g),
        ] {
            assert_eq!(q(text), nanos, "{text}");
        }
    }

    #[test]
    fn canonical_and_written_forms_compare_equal() {
        assert_eq!(q("1024Mi"), q("1Gi"));
        assert_eq!(q("0.5Gi"), q("512Mi"));
        assert_eq!(q("0.1"), q("100m"));
        assert!(q("128M") < q("128Mi"));
    }

    #[test]
    fn sub_nano_fractions_round_up() {
        assert_eq!(q("0.1n"), 1);
        assert_eq!(q("1e-30"), 1);
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for (text, error) in [
            ("", QuantityError::Empty),
            ("GB", QuantityError::Syntax),
            ("4GB", QuantityError::Suffix("GB".into())),
            ("1.2.3", QuantityError::Suffix(".3".into())),
            ("1 Gi", QuantityError::Suffix(" Gi".into())),
            ("1ki", QuantityError::Suffix("ki".into())),
            ("1e", QuantityError::Syntax),
            ("1e99", QuantityError::Overflow),
            ("99999999999999999999999999999999999999999", QuantityError::Overflow),
            ("-", QuantityError::Syntax),
        ] {
            assert_eq!(text.parse::<Quantity>(), Err(error), "{text:?}");
        }
    }
}
