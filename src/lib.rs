//! Kiln: builds container images from Dockerfiles without a daemon or privileges,
//! and pushes them to a registry.

pub mod dockerfile;

#[cfg(test)]
mod testdata;
