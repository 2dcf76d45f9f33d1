//! Kiln: builds container images from Dockerfiles without a daemon or privileges,
//! and pushes them to a registry.

pub mod cache;
pub mod context;
pub mod dispatch;
pub mod dockerfile;
pub mod emulation;
#[cfg(feature = "fuzzing")]
pub mod fuzzcheck;
pub(crate) mod git;
pub mod image;
pub mod layer;
pub mod log;
pub mod pathname;
pub mod plan;
pub mod procs;
pub mod progress;
pub mod publish;
pub mod registry;
pub mod report;
pub(crate) mod rootfs;
pub mod sandbox;
pub mod scratch;
pub mod source;
pub mod times;

#[cfg(test)]
mod testdata;
