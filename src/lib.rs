//! kubedirector-rs: the operator library.

pub mod admission;
pub mod cli;
pub mod examples;
pub mod operator;
pub mod plugin;
pub mod podsecurity;
pub mod signals;
pub mod sim;
pub mod telemetry;
pub mod webhook;
