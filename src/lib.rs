//! kubedirector-rs: the operator library.

pub mod admission;
pub mod cli;
pub mod operator;
pub mod telemetry;
pub mod signals;
pub mod sim;
