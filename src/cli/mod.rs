//! Command-line subcommands. Each submodule owns its clap `Args` and a `run` function returning
//! the process exit status; `main.rs` only dispatches.

pub mod crds;
pub mod demo;
pub mod sim;
pub mod validate;
