//! The image vocabulary, at the bottom of the crate: digests, references,
//! manifest/index/config types, one `Image` value with one serializer, and the
//! `validate` check of a stored image. It imports nothing else of Kiln's;
//! where images come from is `source`.

pub(crate) mod digest;
pub mod model;
pub(crate) mod reference;
pub mod spec;
pub mod validate;

pub use digest::Digest;
pub use model::{Image, Layer, LayerSource, ManifestFormat, Serialized};
pub use reference::Reference;
