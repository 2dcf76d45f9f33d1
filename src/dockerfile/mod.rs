//! Dockerfile reading: parser (text → nodes), instructions (nodes → stages),
//! shell (word expansion).

pub mod instruction;
pub mod parser;
pub mod shell;

pub use instruction::{
    parse_dockerfile, parse_triggers, CommandLine, Copy, Dockerfile, Instruction, InstructionError,
    Location, Stage, Step,
};
