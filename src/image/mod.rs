//! The image model: digests, references, manifest/index/config types, lazy remote
//! images, one `Image` value with one serializer, and the blob store layers open
//! their bytes through.

pub(crate) mod digest;
pub mod model;
pub(crate) mod reference;
pub mod remote;
pub mod spec;
pub(crate) mod store;

pub use digest::Digest;
pub use model::{Image, Layer, LayerSource, ManifestFormat, Serialized};
pub use reference::Reference;
pub use remote::RemoteImage;
pub use store::{BlobStore, StoreError};
