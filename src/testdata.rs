//! Locates test data shared by unit tests.

use std::path::PathBuf;

/// BuildKit's conformance data: `../shared/conformance/buildkit` when present
/// (the project's shared folder), else the copy under `testdata/`.
pub(crate) fn conformance_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/conformance/buildkit");
    if shared.is_dir() {
        shared
    } else {
        root.join("testdata/conformance/buildkit")
    }
}
