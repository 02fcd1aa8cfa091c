//! The hand-written parsers: quantities, durations, image references, versions, field paths.
#![no_main]

use dx_admission::policy::path::FieldPath;
use dx_admission::policy::values::{Duration, ImageRef, Quantity, version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = text.parse::<Quantity>();
    let _ = text.parse::<Duration>();
    if let Ok(image) = ImageRef::parse(text) {
        // A pinned reference keeps its parts inside the input.
        assert!(text.starts_with(image.name));
        let _ = image.is_pinned();
    }
    let middle = (0..=text.len() / 2).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let (left, right) = text.split_at(middle);
    let forward = version::compare(left, right);
    assert_eq!(forward.reverse(), version::compare(right, left), "comparison is antisymmetric");
    let _ = FieldPath::from_pointer(text);
});
