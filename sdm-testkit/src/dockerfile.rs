//! A Dockerfile read as its instructions, for tests on a machine with no container engine:
//! they run what the image would run (the final stage's ENTRYPOINT and CMD, with its ENV and
//! as a user other than root) and its HEALTHCHECK, with the image's paths and ports mapped to
//! the test's, and check the rest (the user, what is copied from the build stage).
//!
//! Only what sdm's own Dockerfiles use is understood: `\` continuations, `#` comments, stages
//! (`FROM image [AS name]`), `ENV k=v …` (values plain or double-quoted), and the exec (JSON)
//! form of ENTRYPOINT, CMD and `HEALTHCHECK [--opt=v …] CMD`. Anything else is kept as text.

use std::path::Path;

use crate::TestkitError;

/// One instruction: its keyword in capitals and its arguments, continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// `FROM`, `RUN`, `COPY`, …
    pub keyword: String,
    /// The rest of the (joined) line, trimmed.
    pub args: String,
    /// The line it starts on (1-based).
    pub line: usize,
}

/// One build stage, `FROM` to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The base image.
    pub from: String,
    /// The stage's `AS` name.
    pub name: Option<String>,
    /// Its instructions after `FROM`.
    pub instructions: Vec<Instruction>,
}

/// A HEALTHCHECK in exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `--interval=10s` and the like, as (`interval`, `10s`).
    pub options: Vec<(String, String)>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// A Dockerfile's stages; the last one is the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Every stage, in order.
    pub stages: Vec<Stage>,
    file: String,
}

impl Dockerfile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Dockerfile, TestkitError> {
        let text = std::fs::read_to_string(path).map_err(|source| TestkitError::Io {
            context: format!("cannot read {}", path.display()),
            source,
        })?;
        Dockerfile::parse(&path.display().to_string(), &text)
    }

    /// Parses `text`, naming `file` in errors.
    pub fn parse(file: &str, text: &str) -> Result<Dockerfile, TestkitError> {
        let error = |line: usize, detail: String| TestkitError::Dockerfile {
            file: file.to_owned(),
            detail: format!("line {line}: {detail}"),
        };
        let mut stages: Vec<Stage> = Vec::new();
        for instruction in instructions(text) {
            if instruction.keyword == "FROM" {
                let words: Vec<&str> = instruction.args.split_whitespace().collect();
                let (from, name) = match words.as_slice() {
                    [from] => (*from, None),
                    [from, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*from, Some((*name).to_owned()))
                    }
                    _ => return Err(error(instruction.line, "FROM IMAGE [AS NAME]".into())),
                };
                stages.push(Stage {
                    from: from.to_owned(),
                    name,
                    instructions: Vec::new(),
                });
                continue;
            }
            match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None => {
                    return Err(error(
                        instruction.line,
                        format!("{} before any FROM", instruction.keyword),
                    ));
                }
            }
        }
        if stages.is_empty() {
            return Err(error(1, "no FROM".into()));
        }
        Ok(Dockerfile {
            stages,
            file: file.to_owned(),
        })
    }

    /// The final stage: what the image is.
    pub fn image(&self) -> &Stage {
        // parse() refuses a file without a stage.
        &self.stages[self.stages.len() - 1]
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// The file's name as given.
    pub fn file(&self) -> &str {
        &self.file
    }
}

impl Stage {
    /// The arguments of every `keyword` instruction, in order.
    pub fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    /// The last `USER`.
    pub fn user(&self) -> Option<&str> {
        self.all("USER").last()
    }

    /// Every `ENV` pair, in order (a later one wins when the image runs).
    pub fn env(&self) -> Vec<(String, String)> {
        self.all("ENV").flat_map(env_pairs).collect()
    }

    /// The last ENTRYPOINT or CMD (`keyword`) in exec form; `None` if absent or in shell form.
    pub fn exec_form(&self, keyword: &str) -> Option<Vec<String>> {
        json_words(self.all(keyword).last()?)
    }

    /// ENTRYPOINT followed by CMD: what a container runs when given no command.
    pub fn command_line(&self) -> Vec<String> {
        let mut words = self.exec_form("ENTRYPOINT").unwrap_or_default();
        words.extend(self.exec_form("CMD").unwrap_or_default());
        words
    }

    /// The last HEALTHCHECK, if in exec form.
    pub fn healthcheck(&self) -> Option<Healthcheck> {
        let mut rest = self.all("HEALTHCHECK").last()?.trim();
        let mut options = Vec::new();
        while let Some(option) = rest.strip_prefix("--") {
            let (word, after) = option.split_once(char::is_whitespace)?;
            let (key, value) = word.split_once('=')?;
            options.push((key.to_owned(), value.to_owned()));
            rest = after.trim_start();
        }
        let command = json_words(rest.strip_prefix("CMD")?.trim())?;
        Some(Healthcheck { options, command })
    }
}

/// The instructions of `text`: comments dropped, `\` continuations joined.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (continued, body) = match line.strip_suffix('\\') {
            Some(body) => (true, body.trim_end()),
            None => (false, line),
        };
        let (start, mut joined) = current.take().unwrap_or((index + 1, String::new()));
        if !joined.is_empty() && !body.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continued {
            current = Some((start, joined));
            continue;
        }
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_owned(),
            line: start,
        });
    }
    out
}

/// `k=v k2="v 2"` as pairs.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = args.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        pairs.push((key.trim().to_owned(), value.to_owned()));
        rest = after.trim_start();
    }
    pairs
}

fn json_words(text: &str) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_env_exec_forms_and_the_healthcheck() {
        let text = "# comment\nFROM rust:1 AS build\nRUN a \\\n    && b\n\nFROM base:nonroot\n\
                    USER 65532:65532\nENV A=1 \\\n    B=\"two words\"\n\
                    HEALTHCHECK --interval=10s --retries=3 \\\n    CMD [\"/bin/x\", \"probe\"]\n\
                    ENTRYPOINT [\"/bin/x\"]\nCMD [\"serve\"]\n";
        let file = Dockerfile::parse("Dockerfile", text).unwrap();
        assert_eq!(file.stages.len(), 2);
        let build = file.stage("build").unwrap();
        assert_eq!(build.all("RUN").collect::<Vec<_>>(), ["a && b"]);
        let image = file.image();
        assert_eq!(image.from, "base:nonroot");
        assert_eq!(image.user(), Some("65532:65532"));
        assert_eq!(
            image.env(),
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two words".to_owned())
            ]
        );
        assert_eq!(image.command_line(), ["/bin/x", "serve"]);
        let check = image.healthcheck().unwrap();
        assert_eq!(check.command, ["/bin/x", "probe"]);
        assert_eq!(check.options[0], ("interval".to_owned(), "10s".to_owned()));
        assert!(Dockerfile::parse("D", "RUN x\n").is_err());
    }
}
