//! The command line.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::Error;
use crate::{admin, logger, serve, tokens};

/// `--help` text.
pub const USAGE: &str = "\
lancert-server: reference lancert management server (local CA, SQLite zone)

Usage:
  lancert-server serve   --config FILE
  lancert-server token   --config FILE [--hostname NAME] [--count N] [--ttl-secs S]
  lancert-server devices --config FILE
  lancert-server records --config FILE [--hostname NAME]
  lancert-server revoke  --config FILE --device ID
  lancert-server --help | --version

Commands:
  serve    Serve the device API over HTTPS. Creates the local CA (ca.pem is the
           file devices trust), the TLS certificate and the database in
           data_dir on first start. Prints `listening on https://ADDR` to
           stderr when ready; stops on SIGTERM or SIGINT.
  token    Mint one-time enrollment tokens, one per line on stdout. Without
           --hostname, the device gets a random name under the zone at
           enrollment. --count: 1 to 10000 (default 1); --ttl-secs: default
           604800 (7 days).
  devices  Print every device as JSON: id, hostname, enrollment, revocation,
           published addresses and last status report.
  records  Print the zone's records as JSON ({name, type, value}).
  revoke   Revoke a device: its requests are refused from then on and its
           address records are withdrawn.

Environment:
  LANCERT_LOG  log level on stderr: error, warn, info (default), debug, trace
";

#[derive(Debug, Default)]
struct Options {
    config: Option<PathBuf>,
    hostname: Option<String>,
    count: Option<u32>,
    ttl_secs: Option<u64>,
    device: Option<String>,
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn parse_options(command: &str, args: &[String]) -> Result<Options, Error> {
    let allowed: &[&str] = match command {
        "serve" | "devices" => &["--config"],
        "token" => &["--config", "--hostname", "--count", "--ttl-secs"],
        "records" => &["--config", "--hostname"],
        "revoke" => &["--config", "--device"],
        _ => return Err(usage(format!("unknown command {command:?}"))),
    };
    let mut opts = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if !allowed.contains(&name) {
            return Err(usage(format!("{command}: unexpected argument {arg:?}")));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| usage(format!("{name} needs a value")))?
            }
        };
        match name {
            "--config" => opts.config = Some(PathBuf::from(value)),
            "--hostname" => opts.hostname = Some(value),
            "--device" => opts.device = Some(value),
            "--count" => {
                opts.count = Some(
                    value
                        .parse()
                        .map_err(|_| usage(format!("--count: {value:?} is not a number")))?,
                )
            }
            "--ttl-secs" => {
                opts.ttl_secs = Some(
                    value
                        .parse()
                        .map_err(|_| usage(format!("--ttl-secs: {value:?} is not a number")))?,
                )
            }
            _ => return Err(usage(format!("{command}: unexpected argument {arg:?}"))),
        }
        i += 1;
    }
    Ok(opts)
}

fn print_json(value: &serde_json::Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(format!("encoding output: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Runs the command line `args` (without the program name).
pub fn run(args: &[String]) -> Result<(), Error> {
    let Some(command) = args.first() else {
        return Err(usage("no command given"));
    };
    match command.as_str() {
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            return Ok(());
        }
        "--version" | "-V" => {
            println!("lancert-server {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => {}
    }
    if args[1..].iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let opts = parse_options(command, &args[1..])?;
    let config_path = opts
        .config
        .clone()
        .ok_or_else(|| usage(format!("{command}: --config FILE is required")))?;
    let config = Config::load(&config_path)?;
    logger::init();
    match command.as_str() {
        "serve" => serve::run(&config),
        "token" => {
            let texts = admin::mint_tokens(
                &config,
                opts.hostname.as_deref(),
                opts.count.unwrap_or(1),
                opts.ttl_secs.unwrap_or(tokens::DEFAULT_TOKEN_TTL_SECS),
            )?;
            let mut out = String::with_capacity(texts.len() * 33);
            for t in texts {
                out.push_str(&t);
                out.push('\n');
            }
            print!("{out}");
            Ok(())
        }
        "devices" => print_json(&admin::devices(&config)?),
        "records" => print_json(&admin::list_records(&config, opts.hostname.as_deref())?),
        "revoke" => {
            let device = opts.device.ok_or_else(|| usage("revoke: --device ID is required"))?;
            let hostname = admin::revoke(&config, &device)?;
            eprintln!("revoked device {device} ({hostname})");
            Ok(())
        }
        _ => Err(usage(format!("unknown command {command:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse_options("token", &args("--config c.json --hostname a.z --count 3 --ttl-secs=60")).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("c.json")));
        assert_eq!(o.hostname.as_deref(), Some("a.z"));
        assert_eq!(o.count, Some(3));
        assert_eq!(o.ttl_secs, Some(60));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            "serve --hostname x",
            "token --count",
            "token --count x",
            "frob --config c",
            "revoke x",
        ] {
            let a = args(bad);
            let e = parse_options(&a[0], &a[1..]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert_eq!(run(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(run(&args("devices")).unwrap_err().exit_code(), 2);
    }
}
