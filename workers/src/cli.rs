//! The command line: `berth-workers [--config FILE] <kind>`. Small enough that a
//! parser crate would be more code than it saves.

use std::path::PathBuf;

use crate::kinds::Kind;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run worker kind `kind`, configured from `config` (else `BERTH_CONFIG`, else
    /// defaults and the environment).
    Run {
        kind: Kind,
        config: Option<PathBuf>,
    },
    Help,
}

/// Parses the arguments after the program name. `config_env` is `BERTH_CONFIG`, used
/// when `--config` is absent.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    config_env: Option<PathBuf>,
) -> Result<Command, String> {
    let mut kind = None;
    let mut config = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err("--config needs a file".to_owned()),
            },
            other if other.starts_with("--config=") => {
                config = Some(PathBuf::from(&other["--config=".len()..]));
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => {
                if kind.is_some() {
                    return Err(format!("unexpected argument {other}"));
                }
                kind = Some(
                    Kind::parse(other).ok_or_else(|| format!("unknown worker kind {other:?}"))?,
                );
            }
        }
    }
    let Some(kind) = kind else {
        return Err("which worker kind?".to_owned());
    };
    Ok(Command::Run {
        kind,
        config: config.or(config_env),
    })
}

/// The usage text.
pub fn usage() -> String {
    let mut text = String::from(
        "usage: berth-workers [--config FILE] <kind>\n\n\
         Every kind also runs the outbox relay (if pipeline.relay.enabled), the\n\
         scheduler and the control listener. FILE defaults to $BERTH_CONFIG; BERTH_…\n\
         variables override it (BERTH_PIPELINE__RELAY__ENABLED=false).\n\nkinds:\n",
    );
    for kind in Kind::ALL {
        text.push_str(&format!("  {:<8} {}\n", kind.name(), kind.about()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn kinds_and_config_files_parse() {
        assert_eq!(
            parse(args("echo"), None),
            Ok(Command::Run {
                kind: Kind::Echo,
                config: None
            })
        );
        assert_eq!(
            parse(args("--config w.toml relay"), Some("env.toml".into())),
            Ok(Command::Run {
                kind: Kind::Relay,
                config: Some("w.toml".into())
            })
        );
        assert_eq!(
            parse(args("echo --config=w.toml"), None),
            Ok(Command::Run {
                kind: Kind::Echo,
                config: Some("w.toml".into())
            })
        );
        assert_eq!(
            parse(args("echo"), Some("env.toml".into())),
            Ok(Command::Run {
                kind: Kind::Echo,
                config: Some("env.toml".into())
            })
        );
        assert_eq!(parse(args("--help"), None), Ok(Command::Help));
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(parse(args(""), None).is_err());
        assert!(parse(args("scan"), None).is_err());
        assert!(parse(args("echo relay"), None).is_err());
        assert!(parse(args("echo --config"), None).is_err());
        assert!(parse(args("echo --verbose"), None).is_err());
    }
}
