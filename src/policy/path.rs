//! Field paths in the form Kubernetes prints them:
//! `spec.template.spec.containers[0].resources.limits.memory`, `data[log.level]`.

use std::fmt;

/// A path to a field of the object under review.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The object as a whole, for findings about all of it (a delete of something in use):
    /// `ConfigMap dx/dx-core-config`, read in messages where a field path would stand.
    pub fn object(kind: &str, qualified_name: &str) -> Self {
        Self(format!("{kind} {qualified_name}"))
    }

    /// A path starting at a top-level field, e.g. `spec`.
    pub fn root(field: &str) -> Self {
        Self(field.to_owned())
    }

    /// A named struct field: `.name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return Self::root(name);
        }
        Self(format!("{}.{name}", self.0))
    }

    /// A list element: `[index]`.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// A map key: `[key]`. Map keys such as `log.level` may contain dots, so they are bracketed.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }

    /// Converts a JSON pointer into the object (`/spec/replicas`, `/data/log.level`).
    ///
    /// Segments under the string maps of ConfigMaps and metadata are keys; numeric segments are
    /// indexes; other segments that look like field names are fields; anything else is a key.
    pub fn from_pointer(pointer: &str) -> Self {
        let mut path = Self::default();
        let mut parent_is_map = false;
        for raw in pointer.split('/').skip(1) {
            let segment = raw.replace("~1", "/").replace("~0", "~");
            let is_field_name = segment.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
                && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            path = if parent_is_map {
                path.key(&segment)
            } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                path.index(segment.parse().unwrap_or(usize::MAX))
            } else if is_field_name {
                path.field(&segment)
            } else {
                path.key(&segment)
            };
            parent_is_map =
                !parent_is_map && matches!(segment.as_str(), "data" | "binaryData" | "labels" | "annotations");
        }
        path
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_kubernetes_style_paths() {
        let path =
            FieldPath::root("spec").field("template").field("spec").field("containers").index(0).field("resources");
        assert_eq!(path.as_str(), "spec.template.spec.containers[0].resources");
        assert_eq!(FieldPath::root("data").key("log.level").as_str(), "data[log.level]");
    }

    #[test]
    fn converts_json_pointers() {
        for (pointer, expected) in [
            ("/data/log.level", "data[log.level]"),
            ("/data/replicas", "data[replicas]"),
            (
                "/spec/template/spec/containers/0/resources/limits/memory",
                "spec.template.spec.containers[0].resources.limits.memory",
            ),
            ("/metadata/labels/app.kubernetes.io~1version", "metadata.labels[app.kubernetes.io/version]"),
            ("/spec/replicas", "spec.replicas"),
            ("", ""),
        ] {
            assert_eq!(FieldPath::from_pointer(pointer).as_str(), expected, "{pointer}");
        }
    }
}
