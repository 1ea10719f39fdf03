//! kubedirector-rs: the operator library.

pub mod admission;
pub mod cli;
