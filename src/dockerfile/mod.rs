//! Dockerfile reading: parser (text → nodes), instructions (nodes → stages),
//! shell (word expansion), checks (BuildKit's build checks).

pub(crate) mod checks;
pub(crate) mod instruction;
pub(crate) mod mount;
mod parse;
pub(crate) mod parser;
pub(crate) mod shell;

pub use instruction::{
    CommandLine, Copy, Dockerfile, Instruction, InstructionError, Location, Run, Stage, Step,
};
pub use parse::{parse_dockerfile, parse_triggers};
