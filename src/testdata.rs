//! Locates test data shared by unit tests.

use std::path::PathBuf;

/// BuildKit's conformance data, copied into the repository (`testdata/`).
pub(crate) fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance/buildkit")
}
