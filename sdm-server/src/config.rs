//! `--config FILE`: every flag of `sdm-server` also from a TOML file.
//!
//! The file has one table per subcommand (`[serve]`, `[gateway]`, `[migrate]`, `[backup]`)
//! whose keys are the long flag names (`data-dir = "/var/lib/sdm"`), and the flags every
//! subcommand takes (`log`, `log-format`) at the top. Precedence: a flag on the command line,
//! then its environment variable, then the file, then the default. The file's values become
//! flags appended to the command line, for the keys neither the command line nor the
//! environment sets, and clap parses the whole as usual, so a value is checked the same way
//! wherever it comes from. An unknown table or key is an error naming it and the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (with the line).
        message: String,
    },
    /// A table, key or value that `sdm-server` does not take.
    #[error("{file}: {message}")]
    Unknown {
        /// The file.
        file: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// `command` with every long flag that names no environment variable of its own also read
/// from `SDM_` and its name in capitals, `-` as `_` (`--data-dir`: `SDM_DATA_DIR`), in every
/// subcommand. The established names stay (`--database-url`: `SDM_DATABASE_URL`, `migrate
/// --to`: the same). An empty variable counts as unset.
pub fn with_env_vars(command: Command) -> Command {
    let named = |arg: clap::Arg| {
        let Some(long) = arg.get_long() else {
            return arg;
        };
        if arg.get_env().is_some() || matches!(long, "help" | "version") {
            return arg;
        }
        let name = format!("SDM_{}", long.to_uppercase().replace('-', "_"));
        arg.env(name)
    };
    command.mut_args(named).mut_subcommands(with_env_vars)
}

/// The configuration file named by `--config FILE` (or `--config=FILE`) in `argv`, else by
/// `env_var`.
pub fn config_path(argv: &[OsString], env_var: &str) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(env_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether `argv` runs `config check`, which reads the file itself: the first word naming a
/// subcommand is `config`.
pub fn is_check(command: &Command, argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .find_map(|word| command.find_subcommand(word))
        .is_some_and(|s| s.get_name() == CONFIG)
}

/// `argv` with the flags the file at `path` sets for `command`'s subcommand in `argv` (and the
/// global ones) appended, leaving out those the command line or the environment sets.
pub fn apply(
    command: &Command,
    argv: Vec<OsString>,
    path: &Path,
) -> Result<Vec<OsString>, ConfigError> {
    let table = read(path)?;
    let file = path.display().to_string();
    let given: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let subcommand = given
        .iter()
        .skip(1)
        .find_map(|word| command.find_subcommand(word));
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) => {
                let Some(sub) = subcommand_of(command, key) else {
                    return Err(unknown(
                        &file,
                        format!(
                            "unknown table [{key}]; the tables are {}",
                            table_names(command)
                        ),
                    ));
                };
                // Only the running subcommand's table applies; the others are checked too.
                let running = subcommand.is_some_and(|s| s.get_name() == sub.get_name());
                for (flag, value) in section {
                    let args = flag_args(sub, flag, value)
                        .map_err(|m| unknown(&file, format!("[{key}] {m}")))?;
                    if running && !set_elsewhere(sub, flag, &given) {
                        extra.extend(args);
                    }
                }
            }
            _ => {
                let args = flag_args(command, key, value).map_err(|m| unknown(&file, m))?;
                if !set_elsewhere(command, key, &given) {
                    extra.extend(args);
                }
            }
        }
    }
    let mut argv = argv;
    argv.extend(extra);
    Ok(argv)
}

fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        let at = e.span().map_or(0, |span| span.start);
        let before = &text[..at.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Syntax {
            file,
            message: format!("line {line}, column {column}: {}", e.message()),
        }
    })
}

fn unknown(file: &str, message: String) -> ConfigError {
    ConfigError::Unknown {
        file: file.to_owned(),
        message,
    }
}

/// The subcommand a table configures (not `config` itself).
fn subcommand_of<'a>(command: &'a Command, name: &str) -> Option<&'a Command> {
    command
        .find_subcommand(name)
        .filter(|s| s.get_name() != CONFIG)
}

/// The subcommand that checks files; it has no table.
const CONFIG: &str = "config";

fn table_names(command: &Command) -> String {
    command
        .get_subcommands()
        .filter(|s| s.get_name() != CONFIG)
        .map(|s| format!("[{}]", s.get_name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command-line words for `key = value` of `command`, or why there are none.
fn flag_args(command: &Command, key: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(key) && key != "config" && key != "help" && key != "version")
        .ok_or_else(|| {
            format!("unknown key {key:?} (keys are the long flag names, e.g. data-dir)")
        })?;
    let flag = format!("--{key}");
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            other => Err(format!("{key} = {other}: expected a string or a number")),
        }
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![flag.into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, other) => Err(format!("{key} = {other}: expected true or false")),
        (ArgAction::Append, toml::Value::Array(items)) => items
            .iter()
            .map(|v| scalar(v).map(|s| [flag.clone().into(), s.into()]))
            .collect::<Result<Vec<[OsString; 2]>, String>>()
            .map(|pairs| pairs.into_iter().flatten().collect()),
        // A list for a flag that takes one comma-separated value (--control-plane a,b).
        (_, toml::Value::Array(items)) => {
            let words = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
            Ok(vec![flag.into(), words.join(",").into()])
        }
        (_, v) => Ok(vec![flag.into(), scalar(v)?.into()]),
    }
}

/// Whether the command line names the flag, or its environment variable is set.
fn set_elsewhere(command: &Command, key: &str, given: &[String]) -> bool {
    let flag = format!("--{key}");
    let prefix = format!("--{key}=");
    if given.iter().any(|w| *w == flag || w.starts_with(&prefix)) {
        return true;
    }
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(key))
        .and_then(|a| a.get_env())
        .and_then(std::env::var_os)
        .is_some_and(|v| !v.is_empty())
}

/// Checks every table of the file against `command` without starting anything: keys, and each
/// table's values as its subcommand would parse them. Returns the tables checked.
pub fn check(command: &Command, path: &Path) -> Result<Vec<String>, ConfigError> {
    let table = read(path)?;
    let file = path.display().to_string();
    let mut checked = Vec::new();
    let bin = command.get_name().to_owned();
    for (key, value) in &table {
        let toml::Value::Table(section) = value else {
            flag_args(command, key, value).map_err(|m| unknown(&file, m))?;
            continue;
        };
        let sub = subcommand_of(command, key).ok_or_else(|| {
            unknown(
                &file,
                format!(
                    "unknown table [{key}]; the tables are {}",
                    table_names(command)
                ),
            )
        })?;
        let mut argv: Vec<OsString> = vec![bin.clone().into(), key.clone().into()];
        for (flag, value) in section {
            argv.extend(
                flag_args(sub, flag, value).map_err(|m| unknown(&file, format!("[{key}] {m}")))?,
            );
        }
        if let Err(e) = command.clone().try_get_matches_from(&argv) {
            // A required flag may come from the command line at start; anything else is wrong.
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                let message = e.to_string();
                let first = message
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                return Err(unknown(&file, format!("[{key}] {first}")));
            }
        }
        checked.push(key.clone());
    }
    Ok(checked)
}
