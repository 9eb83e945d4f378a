//! Command-line arguments, parsed by hand (the grammar is tiny and a parser
//! crate would cost more flash than the whole grammar).

use std::path::PathBuf;

/// Usage text, printed by `--help`.
pub const USAGE: &str = "\
usage: agent [--config FILE] [COMMAND]

Keeps this device's LAN address published and its HTTPS certificate current.

commands:
  run                 run as a daemon (the default)
  --check-now, check  one full check now; exit 0 if something was updated,
                      2 if nothing needed doing, 1 on error
  provision [--server URL] (--token TOKEN | --token-file FILE)
                      enroll this device (factory step) and print its
                      hostname; the server defaults to the config's
                      `server`; re-running on an enrolled device changes
                      nothing
  status              print what the device knows about itself as JSON

options:
  --config FILE       configuration file (default /etc/lancert/agent.json)
  --version           print the version
  --help              print this help
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The daemon.
    Run,
    /// One check.
    CheckNow,
    /// Factory provisioning.
    Provision {
        /// Server base URL; `None`: the configuration's `server`.
        server: Option<String>,
        /// The token, or where to read it.
        token: TokenSource,
    },
    /// Print status.
    Status,
    /// Print the version.
    Version,
    /// Print usage.
    Help,
}

/// Where the enrollment token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given on the command line.
    Literal(String),
    /// Read from a file (keeps it out of `ps`).
    File(PathBuf),
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// The command.
    pub command: Command,
}

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, String> {
    let mut it = args.into_iter();
    let mut config = None;
    let mut command: Option<&'static str> = None;
    let (mut server, mut token, mut token_file) = (None, None, None);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let word = match arg.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(value(&arg)?));
                continue;
            }
            "--server" => {
                server = Some(value(&arg)?);
                continue;
            }
            "--token" => {
                token = Some(value(&arg)?);
                continue;
            }
            "--token-file" => {
                token_file = Some(PathBuf::from(value(&arg)?));
                continue;
            }
            "run" => "run",
            "--check-now" | "check" => "check",
            "provision" => "provision",
            "status" => "status",
            "--version" | "-V" => "version",
            "--help" | "-h" | "help" => "help",
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        };
        if let Some(previous) = command {
            if previous != word {
                return Err(format!("two commands given: {previous} and {word}"));
            }
        }
        command = Some(word);
    }
    let provisioning = command == Some("provision");
    if !provisioning && (server.is_some() || token.is_some() || token_file.is_some()) {
        return Err("--server, --token and --token-file belong to `provision`".into());
    }
    let command = match command.unwrap_or("run") {
        "check" => Command::CheckNow,
        "status" => Command::Status,
        "version" => Command::Version,
        "help" => Command::Help,
        "provision" => {
            let token = match (token, token_file) {
                (Some(t), None) => TokenSource::Literal(t),
                (None, Some(f)) => TokenSource::File(f),
                _ => return Err("provision needs exactly one of --token TOKEN or --token-file FILE".into()),
            };
            Command::Provision { server, token }
        }
        _ => Command::Run,
    };
    Ok(Args { config, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn commands() {
        assert_eq!(p(&[]).unwrap().command, Command::Run);
        assert_eq!(p(&["run"]).unwrap().command, Command::Run);
        assert_eq!(p(&["--check-now"]).unwrap().command, Command::CheckNow);
        assert_eq!(
            p(&["--config", "/a.json", "check"]).unwrap().config,
            Some(PathBuf::from("/a.json"))
        );
        assert_eq!(p(&["status", "--config", "/a.json"]).unwrap().command, Command::Status);
        assert_eq!(
            p(&["provision", "--server", "https://s", "--token", "t"])
                .unwrap()
                .command,
            Command::Provision {
                server: Some("https://s".into()),
                token: TokenSource::Literal("t".into())
            }
        );
        assert_eq!(p(&["--version"]).unwrap().command, Command::Version);
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(p(&["--config"]).unwrap_err().contains("needs a value"));
        assert!(p(&["provision", "--server", "https://s"])
            .unwrap_err()
            .contains("--token"));
        assert_eq!(
            p(&["provision", "--token-file", "/t"]).unwrap().command,
            Command::Provision {
                server: None,
                token: TokenSource::File("/t".into())
            }
        );
        assert!(p(&["check", "--token", "t"]).unwrap_err().contains("provision"));
        assert!(p(&["check", "status"]).unwrap_err().contains("two commands"));
        assert!(p(&["--frobnicate"]).unwrap_err().contains("unknown argument"));
    }
}
