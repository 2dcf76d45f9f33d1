//! Where images and blobs come from, above the registry client: lazy remote
//! images (manifest and config; layer bytes on demand) and the blob store every
//! layer opens its bytes through.

pub mod remote;
pub(crate) mod store;

pub(crate) use store::{BlobStore, StoreError};
