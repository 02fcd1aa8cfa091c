//! Decode: request body → typed admission request. Anything that cannot be read is a
//! [`DecodeError`], answered with HTTP 400 and the reason; it never reaches the policy.

use kube::core::admission::{AdmissionRequest, Operation as KubeOperation};
use kube::core::{DynamicObject, TypeMeta};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::policy::{Object, Operation, ResourceKind};

/// The only AdmissionReview version spoken.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a usable AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request body is empty")]
    Empty,
    #[error("request body nests JSON deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    #[error(
        "apiVersion {found:?} is not supported: dx-admission speaks {API_VERSION} only (set admissionReviewVersions: [v1])"
    )]
    ApiVersion { found: String },
    #[error("kind {found:?} is not {KIND}")]
    Kind { found: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has an empty uid")]
    MissingUid,
    #[error("request.{field} is a {found}, but request.kind says {expected}")]
    ObjectKind { field: &'static str, expected: String, found: String },
    #[error("request.{field} is not a valid {kind}: {source}")]
    ObjectShape {
        field: &'static str,
        kind: ResourceKind,
        #[source]
        source: serde_json::Error,
    },
    #[error("request.object is missing for a {operation} of a {kind}")]
    MissingObject { operation: Operation, kind: ResourceKind },
}

impl DecodeError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooDeep { .. } => "too_deep",
            Self::Json(_) => "malformed",
            Self::ApiVersion { .. } => "api_version",
            Self::Kind { .. } => "kind",
            Self::MissingRequest => "missing_request",
            Self::MissingUid => "missing_uid",
            Self::ObjectKind { .. } | Self::ObjectShape { .. } | Self::MissingObject { .. } => "object",
        }
    }
}

/// A decoded review. `request` keeps the envelope (uid, user, kind) for the response;
/// its objects have been moved into the typed fields.
pub struct Decoded {
    pub request: AdmissionRequest<DynamicObject>,
    pub operation: Operation,
    /// `None` for kinds dx-admission does not review: those are allowed untouched.
    pub kind: Option<ResourceKind>,
    pub object: Option<Object>,
    pub old_object: Option<Object>,
}

impl Decoded {
    pub fn namespace(&self) -> &str {
        self.request.namespace.as_deref().unwrap_or("")
    }
}

/// Decodes a request body, refusing JSON nested deeper than `max_depth`.
pub fn decode(body: &[u8], max_depth: usize) -> Result<Decoded, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    if nesting_depth(body) > max_depth {
        return Err(DecodeError::TooDeep { limit: max_depth });
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // A derived struct would also accept a JSON array; let serde name what arrived instead.
        if let Err(error) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
            return Err(DecodeError::Json(error));
        }
    }
    let envelope: wire::AdmissionReview = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    if envelope.api_version != API_VERSION {
        return Err(DecodeError::ApiVersion { found: envelope.api_version });
    }
    if envelope.kind != KIND {
        return Err(DecodeError::Kind { found: envelope.kind });
    }
    let wire::MapOnly(wire) = envelope.request.ok_or(DecodeError::MissingRequest)?;
    let (raw_object, raw_old_object) = (wire.object, wire.old_object);
    let request = AdmissionRequest {
        types: TypeMeta { api_version: envelope.api_version, kind: envelope.kind },
        uid: wire.uid,
        kind: wire.kind,
        resource: wire.resource,
        sub_resource: wire.sub_resource,
        request_kind: wire.request_kind,
        request_resource: wire.request_resource,
        request_sub_resource: wire.request_sub_resource,
        name: wire.name,
        namespace: wire.namespace,
        operation: wire.operation,
        user_info: wire.user_info,
        object: None,
        old_object: None,
        dry_run: wire.dry_run,
        // Not read by any rule: left unparsed.
        options: None,
    };
    if request.uid.is_empty() {
        return Err(DecodeError::MissingUid);
    }
    let operation = match request.operation {
        KubeOperation::Create => Operation::Create,
        KubeOperation::Update => Operation::Update,
        KubeOperation::Delete => Operation::Delete,
        KubeOperation::Connect => Operation::Connect,
    };
    let kind = ResourceKind::from_group_kind(&request.kind.group, &request.kind.kind);
    let (mut object, mut old_object) = (None, None);
    if let Some(kind) = kind {
        object = typed(raw_object, kind, "object")?;
        // The API server's record of who set which field: no rule reads it of the new object
        // (the backup gate reads the stored one's), and it is most of a captured workload's
        // metadata, which the schema check would otherwise copy into its instance.
        if let Some(object) = &mut object {
            object.metadata_mut().managed_fields = None;
        }
        old_object = typed(raw_old_object, kind, "oldObject")?;
        if object.is_none() && matches!(operation, Operation::Create | Operation::Update) {
            return Err(DecodeError::MissingObject { operation, kind });
        }
        // API servers send the stored object on DELETE; without one, rules judge it by its name.
        if old_object.is_none() && operation == Operation::Delete {
            let namespace = request.namespace.as_deref().unwrap_or("");
            old_object = Some(Object::named(kind, namespace, &request.name));
        }
    }
    Ok(Decoded { request, operation, kind, object, old_object })
}

fn typed(raw: Option<&RawValue>, kind: ResourceKind, field: &'static str) -> Result<Option<Object>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    Object::parse(kind, raw.get()).map(Some).map_err(|source| {
        // The typed parser words a kind mismatch as a bad value; say what was sent instead.
        #[derive(Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        match serde_json::from_str::<Kind>(raw.get()) {
            Ok(Kind { kind: Some(found) }) if found != kind.as_str() => {
                DecodeError::ObjectKind { field, expected: kind.as_str().to_owned(), found }
            }
            _ => DecodeError::ObjectShape { field, kind, source },
        }
    })
}

/// An AdmissionReview as sent, read in one pass: the envelope typed field by field, the objects
/// left as raw JSON to be parsed straight into their kind's type. (kube's `AdmissionReview`
/// buffers the whole body for a flattened field, and a flattened envelope still buffered every
/// envelope field in serde's generic form first.) The type names appear in serde's messages,
/// hence a module of their own.
mod wire {
    use std::fmt;
    use std::marker::PhantomData;

    use k8s_openapi::api::authentication::v1::UserInfo;
    use kube::core::admission::Operation;
    use kube::core::{GroupVersionKind, GroupVersionResource};
    use serde::Deserialize;
    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    pub struct AdmissionReview<'a> {
        #[serde(rename = "apiVersion")]
        pub api_version: String,
        pub kind: String,
        #[serde(borrow)]
        pub request: Option<MapOnly<AdmissionRequest<'a>>>,
    }

    /// A struct read from a JSON object only: a derived struct would also take a JSON array,
    /// field by field in order.
    pub struct MapOnly<T>(pub T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(MapVisitor(PhantomData))
        }
    }

    struct MapVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
        type Value = MapOnly<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            // The words serde uses for a derived struct, so messages stay the same.
            formatter.write_str("struct AdmissionRequest")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(MapOnly)
        }
    }

    /// The fields of kube's `AdmissionRequest`, with the same defaults.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AdmissionRequest<'a> {
        pub uid: String,
        pub kind: GroupVersionKind,
        pub resource: GroupVersionResource,
        #[serde(default)]
        pub sub_resource: Option<String>,
        #[serde(default)]
        pub request_kind: Option<GroupVersionKind>,
        #[serde(default)]
        pub request_resource: Option<GroupVersionResource>,
        #[serde(default)]
        pub request_sub_resource: Option<String>,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub namespace: Option<String>,
        pub operation: Operation,
        pub user_info: UserInfo,
        #[serde(borrow, default)]
        pub object: Option<&'a RawValue>,
        #[serde(borrow, default)]
        pub old_object: Option<&'a RawValue>,
        #[serde(default)]
        pub dry_run: bool,
    }
}

/// The deepest nesting of arrays and objects, scanning bytes; strings are skipped whole.
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while let Some(&byte) = body.get(at) {
        match byte {
            b'"' => {
                at = past_string(body, at + 1);
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    deepest
}

/// The offset just past the string whose text starts at `from`, jumping from quote or
/// backslash to the next (strings are most of a review's bytes); the end if it never closes.
fn past_string(body: &[u8], mut from: usize) -> usize {
    while let Some(rest) = body.get(from..) {
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(offset) if rest[offset] == b'"' => return from + offset + 1,
            // A backslash escapes the byte after it.
            Some(offset) => from += offset + 2,
            None => break,
        }
    }
    body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_object_loses_its_managed_fields_and_the_stored_one_keeps_them() {
        let body = include_bytes!("../../tests/fixtures/admission-reviews/e2e/10-update-statefulset-dx-core.json");
        let decoded = decode(body, 64).expect("a request the API server sent");
        assert_eq!(decoded.object.expect("object").metadata().managed_fields, None);
        let stored = decoded.old_object.expect("oldObject");
        let managers: Vec<_> =
            stored.metadata().managed_fields.iter().flatten().map(|entry| entry.manager.as_deref()).collect();
        assert_eq!(managers, [Some("kubectl-client-side-apply")]);
    }

    #[test]
    fn depth_ignores_brackets_inside_strings() {
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":"[[[{{{"}]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a":"\"[[["}"#), 1);
        assert_eq!(nesting_depth(b"[[[[]]]]"), 4);
        assert_eq!(nesting_depth(br#"[{"a\\":[{"b":"c\\\"]]]"}]}]"#), 4);
    }

    #[test]
    fn depth_of_an_unterminated_string_or_escape_ends_at_the_body() {
        assert_eq!(nesting_depth(br#"[["abc"#), 2);
        assert_eq!(nesting_depth(b"[[\"ab\\"), 2);
        assert_eq!(nesting_depth(b"[\"\\\\"), 1);
    }
}
