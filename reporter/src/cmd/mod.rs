//! Subcommands: each wires the layers (read → symbolize → model → verdict → render) for one
//! use.

pub mod control;
pub mod diff;
pub mod dump;
pub mod report;
pub mod run;
