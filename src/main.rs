//! The kubedirector binary: argument parsing and dispatch only.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kubedirector::cli;

/// KubeDirector, re-implemented in Rust.
#[derive(Debug, Parser)]
#[command(name = "kubedirector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands; add new ones as variants here and a module under `src/cli/`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Offline admission check of kdapp/kdcluster/kdconfig documents.
    Validate(cli::validate::ValidateArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cli.command {
        Command::Validate(args) => cli::validate::run(&args, &mut out, &mut err),
        Command::Crds => cli::crds::run(&mut out, &mut err),
    };
    ExitCode::from(code)
}
