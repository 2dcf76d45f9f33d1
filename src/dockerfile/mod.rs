//! Dockerfile reading: parser (text → nodes), instructions (nodes → stages),
//! shell (word expansion), checks (BuildKit's build checks).

pub(crate) mod checks;
pub(crate) mod instruction;
pub(crate) mod mount;
pub(crate) mod parser;
pub(crate) mod shell;

pub use instruction::{
    parse_dockerfile, parse_triggers, CommandLine, Copy, Dockerfile, Instruction, InstructionError,
    Location, Run, Stage, Step,
};
