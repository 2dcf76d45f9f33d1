//! Command-line flags with Kaniko's names, validated once into options:
//! `flags` (clap's definitions), `kaniko` (Kaniko's flags Kiln has no use
//! for) and `options` (the validated values, which build the library's own).

mod flags;
mod kaniko;
mod options;
#[cfg(test)]
mod tests;

pub use flags::*;
pub use kaniko::*;
pub use options::*;
