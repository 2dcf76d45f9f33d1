//! Command-line flags with Kaniko's names, validated once into options:
//! `flags` (clap's definitions), `kaniko` (Kaniko's flags Kiln has no use
//! for), `options` (the validated values, which build the library's own)
//! and `log` (the log the flags ask for).

mod flags;
mod kaniko;
mod log;
mod options;
#[cfg(test)]
mod tests;

pub use flags::*;
pub use kaniko::*;
pub use options::*;
