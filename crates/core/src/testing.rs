//! Helpers shared by this crate's unit tests.
//!
//! The other crates' tests take these from `omirr-testkit`; this crate's
//! unit tests cannot, because the testkit depends on `omirr-core`, and a
//! unit test would see its `RelPath` as a different type from the one
//! being tested. So [`p`] is written here once more, as the testkit's is.

use crate::RelPath;

/// The relative path `s`; panics if it is not a valid one.
pub(crate) fn p(s: &str) -> RelPath {
    RelPath::new(s.as_bytes()).expect("path")
}
