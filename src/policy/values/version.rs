//! Natural ordering of application versions (`9.5.225` < `9.5.1000`, `95-cf225` < `95-cf230`).
//!
//! DX versions are not strict semver, so they are compared as runs of digits (numerically)
//! and runs of other characters (case-insensitively), left to right.

use std::cmp::Ordering;

/// Compares two version strings naturally.
pub fn compare(left: &str, right: &str) -> Ordering {
    let mut left = chunks(left);
    let mut right = chunks(right);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(a), Some(b)) => {
                let order = match (a, b) {
                    (Chunk::Number(a), Chunk::Number(b)) => {
                        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
                        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
                    }
                    (Chunk::Text(a), Chunk::Text(b)) => a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase()),
                    (Chunk::Number(_), Chunk::Text(_)) => Ordering::Greater,
                    (Chunk::Text(_), Chunk::Number(_)) => Ordering::Less,
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

enum Chunk<'a> {
    Number(&'a str),
    Text(&'a str),
}

/// Digit runs and text runs; separators (`.`, `-`, `_`, `+`) only split.
fn chunks(version: &str) -> impl Iterator<Item = Chunk<'_>> {
    let version = version.strip_prefix(['v', 'V']).unwrap_or(version);
    let mut rest = version;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(['.', '-', '_', '+']);
        let first = rest.chars().next()?;
        let digits = first.is_ascii_digit();
        let end = rest.find(|c: char| c.is_ascii_digit() != digits || ".-_+".contains(c)).unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(if digits { Chunk::Number(chunk) } else { Chunk::Text(chunk) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_versions_naturally() {
        for (lower, higher) in [
            ("9.5.225", "9.5.1000"),
            ("95-cf225", "95-cf230"),
            ("95_CF225", "95_cf226"),
            ("1.2", "1.2.1"),
            ("v1.9", "1.10"),
            ("1.0-rc1", "1.0.1"),
        ] {
            assert_eq!(compare(lower, higher), Ordering::Less, "{lower} < {higher}");
            assert_eq!(compare(higher, lower), Ordering::Greater, "{higher} > {lower}");
        }
        assert_eq!(compare("9.5.0225", "9.5.225"), Ordering::Equal);
        assert_eq!(compare("CF225", "cf225"), Ordering::Equal);
    }
}
