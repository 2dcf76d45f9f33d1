//! The image vocabulary, at the bottom of the crate: digests, references,
//! manifest/index/config types, and one `Image` value with one serializer. It
//! imports nothing of Kiln's but the path and log helpers; where images come
//! from is `source`.

pub(crate) mod digest;
pub mod model;
pub(crate) mod reference;
pub mod spec;
pub mod validate;

pub use digest::Digest;
pub use model::{Image, Layer, LayerSource, ManifestFormat, Serialized};
pub use reference::Reference;
