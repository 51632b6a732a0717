//! What a command line program says it accepts: every subcommand and every `--flag` its
//! `--help` lists (clap's layout), so that a test can check that its README names each one and
//! documentation cannot drift from the binary unnoticed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::TestkitError;

/// One flag of one command: `("serve", "--data-dir")`, `("admin grant", "--json")`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flag {
    /// The subcommands leading to it, space-separated ("" for the program itself).
    pub command: String,
    /// The flag, with its dashes.
    pub flag: String,
}

/// Every flag of `program` and of its subcommands, recursively.
pub fn flags(program: &Path) -> Result<BTreeSet<Flag>, TestkitError> {
    let mut found = BTreeSet::new();
    let mut todo = vec![Vec::<String>::new()];
    // Bounded: clap's trees are small, and a command is never visited twice.
    let mut seen = BTreeSet::new();
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) || seen.len() > 500 {
            continue;
        }
        let out = Command::new(program)
            .args(&path)
            .arg("--help")
            .output()
            .map_err(|e| TestkitError::io(format!("running {} --help", program.display()), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (commands, options) = sections(&text);
        for name in commands {
            let mut next = path.clone();
            next.push(name);
            todo.push(next);
        }
        for flag in options {
            found.insert(Flag {
                command: path.join(" "),
                flag,
            });
        }
    }
    Ok(found)
}

/// The subcommand names and the long flags of one `--help` text.
fn sections(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut commands, mut options) = (Vec::new(), Vec::new());
    let mut in_commands = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if in_commands {
            if first != "help" && !first.is_empty() {
                commands.push(first.to_owned());
            }
            continue;
        }
        for word in line.split([' ', ',']) {
            if let Some(name) = word.strip_prefix("--")
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && line.trim_start().starts_with('-')
                && !matches!(name, "help" | "version")
            {
                options.push(format!("--{name}"));
                break;
            }
        }
    }
    (commands, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_help_is_read() {
        let text = "Run things\n\nUsage: x serve [OPTIONS]\n\nCommands:\n  serve    Serve\n  \
                    help     Print help\n\nOptions:\n      --data-dir <DIR>\n          Where \
                    (see --other)\n  -j, --json\n          JSON\n  -h, --help\n          Print help\n";
        let (commands, options) = sections(text);
        assert_eq!(commands, ["serve"]);
        assert_eq!(options, ["--data-dir", "--json"]);
    }
}
