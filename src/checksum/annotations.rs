//! The checksum annotation keys on pod templates. Public API: documented in `docs/annotations.md`.
//!
//! - `dx.hcl.com/config-checksum: sha256:<hex>`: one value over every source; changes whenever any
//!   source the pods can see changes.
//! - `checksum.dx.hcl.com/<kind>.<name>`: one per source, so an operator can see which changed;
//!   `sha256:<hex>` for ConfigMaps, `hmac-sha256:<hex>` for Secrets.
//!
//! The part after `/` of an annotation key holds at most 63 characters, but object names may
//! have 253. Names that do not fit keep their first characters and end with `.` and the first
//! 10 hex digits of the SHA-256 of the whole name, so every valid name gives a valid, distinct key.

use ring::digest;

use super::digest::hex;
use super::refs::{SourceKind, SourceRef};

pub const AGGREGATE: &str = "dx.hcl.com/config-checksum";
/// Every per-source key starts with this; keys with it that no longer match a source are removed.
pub const SOURCE_PREFIX: &str = "checksum.dx.hcl.com/";

const NAME_LIMIT: usize = 63;
const HASH_DIGITS: usize = 10;

fn kind_word(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::ConfigMap => "configmap",
        SourceKind::Secret => "secret",
    }
}

/// The per-source annotation key.
pub fn source_key(source: &SourceRef) -> String {
    let word = kind_word(source.kind);
    let full = format!("{word}.{}", source.name);
    if full.len() <= NAME_LIMIT {
        return format!("{SOURCE_PREFIX}{full}");
    }
    let hash = hex(digest::digest(&digest::SHA256, source.name.as_bytes()).as_ref());
    let keep = NAME_LIMIT - word.len() - 2 - HASH_DIGITS;
    // Object names are ASCII (DNS subdomains), so a byte index is a character index.
    let head = source.name.get(..keep).unwrap_or(&source.name);
    format!("{SOURCE_PREFIX}{word}.{head}.{}", &hash[..HASH_DIGITS])
}

/// The per-source annotation value.
pub fn source_value(kind: SourceKind, checksum: &[u8]) -> String {
    match kind {
        SourceKind::ConfigMap => format!("sha256:{}", hex(checksum)),
        SourceKind::Secret => format!("hmac-sha256:{}", hex(checksum)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: SourceKind, name: &str) -> String {
        source_key(&SourceRef { kind, name: name.into() })
    }

    /// The syntax Kubernetes requires of a qualified annotation key's name part.
    fn valid_name_part(key: &str) -> bool {
        let name = key.strip_prefix(SOURCE_PREFIX).unwrap();
        let bytes = name.as_bytes();
        !name.is_empty()
            && name.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
    }

    #[test]
    fn short_names_are_kept_whole() {
        assert_eq!(key(SourceKind::ConfigMap, "dx-core-config"), "checksum.dx.hcl.com/configmap.dx-core-config");
        assert_eq!(key(SourceKind::Secret, "dx-db-credentials"), "checksum.dx.hcl.com/secret.dx-db-credentials");
    }

    #[test]
    fn every_valid_name_up_to_253_characters_gives_a_valid_distinct_key() {
        let mut seen = std::collections::BTreeSet::new();
        for length in [1, 52, 53, 54, 56, 57, 63, 100, 200, 253] {
            for (kind, fill) in [(SourceKind::ConfigMap, 'a'), (SourceKind::Secret, 'b')] {
                let mut name: String = std::iter::repeat_n(fill, length).collect();
                if length > 3 {
                    // Dots and dashes inside, as DNS subdomains allow.
                    name.replace_range(1..3, ".-");
                }
                let k = key(kind, &name);
                assert!(valid_name_part(&k), "{length}: {k}");
                assert!(seen.insert(k), "{length}: keys must be distinct");
            }
        }
        let a = key(SourceKind::ConfigMap, &format!("{}-one", "x".repeat(200)));
        let b = key(SourceKind::ConfigMap, &format!("{}-two", "x".repeat(200)));
        assert_ne!(a, b, "names sharing a long prefix differ by their hash");
    }

    #[test]
    fn values_name_their_algorithm() {
        assert_eq!(source_value(SourceKind::ConfigMap, &[0xab]), "sha256:ab");
        assert_eq!(source_value(SourceKind::Secret, &[0xab]), "hmac-sha256:ab");
    }
}
