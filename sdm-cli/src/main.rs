//! `sdm`: the service-account workflow from the shell. See README.md for the commands, exit
//! codes, the `SDM_HOME` layout and the agent protocol.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod agent;
mod cli;
mod client;
mod commands;
mod exit;
mod home;
mod open_files;
mod protocol;
mod render;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, LogFormat};
use crate::exit::{CliError, Exit};
use crate::home::Home;

/// The log filter variable (tracing syntax, e.g. `info` or `sdm_core=debug`).
const LOG_ENV_VAR: &str = "SDM_LOG";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; usage errors exit 2 (Exit::Usage).
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let agent = match &cli.command {
        Command::Listen(args) => Some(args.log_format),
        _ => None,
    };
    init_logging(agent);
    if agent.is_some() {
        open_files::raise_to_hard_limit();
    }
    let result = match &cli.command {
        Command::Run(args) => {
            Home::resolve(cli.home.as_deref()).and_then(|home| commands::run::run(&home, args))
        }
        Command::Ssh(args) => {
            Home::resolve(cli.home.as_deref()).and_then(|home| commands::ssh::ssh(&home, args))
        }
        _ => run(cli).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let line = e.line();
            if !line.is_empty() {
                eprintln!("sdm: {line}");
            }
            e.exit.into()
        }
    }
}

/// The agent (given its log format) logs at `info` by default; other commands log nothing
/// unless `SDM_LOG` says so, so that an error is one line.
fn init_logging(agent: Option<LogFormat>) {
    let default = if agent.is_some() { "info" } else { "off" };
    let filter = std::env::var(LOG_ENV_VAR)
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_new(default).ok());
    let Some(filter) = filter else { return };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match agent.unwrap_or(LogFormat::Text) {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

fn run(cli: Cli) -> Result<(), CliError> {
    let home = || Home::resolve(cli.home.as_deref());
    match cli.command {
        Command::Login(args) => commands::session::login(&home()?, args),
        Command::Logout => commands::session::logout(&home()?),
        Command::Status(args) => commands::tunnels::status(&home()?, args),
        Command::Connect(args) => commands::tunnels::connect(&home()?, args),
        Command::Disconnect(args) => commands::tunnels::disconnect(&home()?, args),
        Command::Ready(args) => commands::session::ready(&home()?, args),
        Command::Probe(args) => commands::probe::probe(&args),
        Command::Listen(args) => commands::session::listen(&home()?, args),
        Command::Admin(args) => commands::admin::run(*args),
        Command::Install(args) => commands::service::install(&args),
        Command::Uninstall(args) => commands::service::uninstall(&args),
        Command::Run(_) => Err(CliError::internal("sdm run is handled by main")),
        Command::Ssh(_) => Err(CliError::internal("sdm ssh is handled by main")),
        Command::SshConfig => commands::ssh::ssh_config(&home()?),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sdm", &mut std::io::stdout());
            Ok(())
        }
    }
}
