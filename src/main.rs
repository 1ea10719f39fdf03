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
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<kubedirector::operator::RunOptions>),
    /// Run kubesim, the embedded Kubernetes API server with a simulated control plane.
    Sim(cli::sim::SimArgs),
    /// kubesim, the operator and the example catalog in one process, with a scripted scenario.
    Demo(cli::demo::DemoArgs),
    /// The kubectl plugin's commands (`kubectl kd ...` once `install-plugin` made the symlink).
    Kd {
        /// The plugin command.
        #[command(subcommand)]
        command: kubedirector::plugin::KdCommand,
    },
    /// Make `kubectl kd` work: a `kubectl-kd` symlink to this binary in DIR.
    InstallPlugin(kubedirector::plugin::InstallArgs),
}

fn main() -> ExitCode {
    // Invoked as `kubectl-kd` (by kubectl, through the symlink): the plugin.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if kubedirector::plugin::invoked_as_plugin(argv.first()) {
        return ExitCode::from(kubedirector::plugin::run_argv(argv));
    }
    let cli = Cli::parse_from(argv);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cli.command {
        Command::Validate(args) => cli::validate::run(&args, &mut out, &mut err),
        Command::Crds => cli::crds::run(&mut out, &mut err),
        Command::Run(opts) => {
            // The operator logs to stdout from every runtime thread: holding the stream locks
            // here would block each of them at its first log line, timers and signals included
            // (a silent stall: the process no longer even ends on SIGTERM).
            drop((out, err));
            match kubedirector::operator::run(*opts) {
                Ok(()) => 0,
                Err(e) => {
                    // Errors from `run` are complete one-line sentences starting with "kubedirector: ".
                    eprintln!("{e:#}");
                    1
                }
            }
        }
        Command::Sim(args) => {
            // kubesim prints from its runtime threads too: release the stream locks (holding
            // them would block each such thread at its first line, as for `run`).
            drop((out, err));
            cli::sim::run(&args, &mut std::io::stderr())
        }
        Command::Demo(args) => {
            // The operator and kubesim log from other threads: release the stream locks.
            drop((out, err));
            cli::demo::run(&args)
        }
        Command::Kd { command } => {
            drop((out, err));
            kubedirector::plugin::run(command)
        }
        Command::InstallPlugin(args) => kubedirector::plugin::install(&args, &mut out, &mut err),
    };
    ExitCode::from(code)
}
