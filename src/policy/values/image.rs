//! Container image references, read just far enough to tell whether an image is pinned.

/// The parts of `[registry/]repository[:tag][@digest]` that decide pinning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Registry and repository, e.g. `registry.example.com:5000/hcl/dx/core`.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// Why an image reference is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("is empty")]
    Empty,
    #[error("has an empty repository name")]
    EmptyName,
    #[error("has an empty tag after ':'")]
    EmptyTag,
    #[error("has a malformed digest (expected algorithm:hex, e.g. sha256:<64 hex digits>)")]
    Digest,
}

impl<'a> ImageRef<'a> {
    /// Splits an image reference. A `:` before the last `/` belongs to a registry port.
    pub fn parse(text: &'a str) -> Result<Self, ImageError> {
        if text.trim().is_empty() {
            return Err(ImageError::Empty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let (algorithm, hex) = digest.split_once(':').ok_or(ImageError::Digest)?;
                let valid_algorithm = !algorithm.is_empty()
                    && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
                if !valid_algorithm || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ImageError::Digest);
                }
                (rest, Some(digest))
            }
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                let tag = &rest[colon + 1..];
                if tag.is_empty() {
                    return Err(ImageError::EmptyTag);
                }
                (&rest[..colon], Some(tag))
            }
            None => (rest, None),
        };
        if name.is_empty() || name.ends_with('/') {
            return Err(ImageError::EmptyName);
        }
        Ok(Self { name, tag, digest })
    }

    /// Pinned: a digest, or a tag other than `latest`.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some() || self.tag.is_some_and(|tag| tag != "latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn splits_registry_port_tag_and_digest() {
        let with_port = ImageRef::parse("registry.local:5000/hcl/dx/core:95_CF225").unwrap();
        assert_eq!(with_port.name, "registry.local:5000/hcl/dx/core");
        assert_eq!(with_port.tag, Some("95_CF225"));
        assert!(with_port.is_pinned());

        let port_only = ImageRef::parse("registry.local:5000/hcl/dx/core").unwrap();
        assert_eq!(port_only.tag, None);
        assert!(!port_only.is_pinned());

        let digest = format!("hcl/dx/core@{DIGEST}");
        let by_digest = ImageRef::parse(&digest).unwrap();
        assert_eq!(by_digest.digest, Some(DIGEST));
        assert!(by_digest.is_pinned());

        let both = format!("hcl/dx/core:latest@{DIGEST}");
        assert!(ImageRef::parse(&both).unwrap().is_pinned());
    }

    #[test]
    fn latest_and_untagged_are_not_pinned() {
        assert!(!ImageRef::parse("nginx").unwrap().is_pinned());
        assert!(!ImageRef::parse("nginx:latest").unwrap().is_pinned());
        assert!(ImageRef::parse("nginx:1.27").unwrap().is_pinned());
    }

    #[test]
    fn rejects_malformed_references() {
        assert_eq!(ImageRef::parse(" "), Err(ImageError::Empty));
        assert_eq!(ImageRef::parse("nginx:"), Err(ImageError::EmptyTag));
        assert_eq!(ImageRef::parse(":1.0"), Err(ImageError::EmptyName));
        assert_eq!(ImageRef::parse("nginx@sha256:xyz"), Err(ImageError::Digest));
        assert_eq!(ImageRef::parse("nginx@deadbeef"), Err(ImageError::Digest));
    }
}
