//! The image model: references, manifest/index/config types, lazy remote images.

pub mod digest;
pub mod reference;
pub mod remote;
pub mod spec;

pub use digest::Digest;
pub use reference::Reference;
pub use remote::{Layer, LayerSource, ManifestFormat, RemoteImage};
