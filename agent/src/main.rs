//! `agent`: parses arguments, runs the command, maps the result to an exit
//! code. `--check-now` follows OpenBSD acme-client's convention: 0 when
//! something was updated, 2 when nothing needed doing, 1 on error.

use agent::check::{self, Steps};
use agent::cli::{self, Command, TokenSource};
use agent::config::{self, Config};
use agent::error::{Error, Result};
use agent::lock::CheckLock;
use agent::provision::{self, Provisioned};
use agent::schedule::OsRandom;
use agent::state::StateDir;
use agent::{daemon, logger, status};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How long `--check-now` waits for a running check to finish.
const CHECK_LOCK_WAIT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agent: {e}");
            return ExitCode::from(1);
        }
    };
    logger::init(log::LevelFilter::Info);
    match try_main(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn try_main(args: cli::Args) -> Result<u8> {
    let file = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match args.command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(0)
        }
        Command::Version => {
            println!("agent {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Provision { server, token } => {
            let config = Config::load(&file, false, args.config.is_none())?;
            logger::init(config.log_level);
            let server = server.or_else(|| config.server.clone()).ok_or_else(|| {
                Error::Other(format!(
                    "provision needs --server URL, or `server` in {}",
                    config.file.display()
                ))
            })?;
            let token = read_token(&token)?;
            match provision::provision(&config, &server, &token)? {
                Provisioned::Enrolled(e) => {
                    log::info!("enrolled as device {} with hostname {}", e.device, e.hostname);
                    println!("{}", e.hostname);
                }
                Provisioned::AlreadyEnrolled(e) => {
                    log::info!(
                        "already enrolled as device {} ({}); nothing changed",
                        e.device,
                        e.hostname
                    );
                    println!("{}", e.hostname);
                }
            }
            Ok(0)
        }
        Command::Status => {
            let config = load_runtime(&file)?;
            let doc = status::collect(&config);
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            Ok(0)
        }
        Command::CheckNow => {
            let config = load_runtime(&file)?;
            logger::init(config.log_level);
            let _lock = CheckLock::acquire(&config.runtime_dir, CHECK_LOCK_WAIT)?;
            let mut sleep = |d: Duration| {
                std::thread::sleep(d);
                true
            };
            match check::run(&config, Steps::ALL, &mut OsRandom, &mut sleep) {
                Ok(outcome) if outcome.updated() => Ok(0),
                Ok(outcome) => {
                    if outcome.clock_not_sane {
                        log::warn!("nothing decided: the system clock is not set yet");
                    } else if let Some(at) = outcome.pending_until {
                        log::info!("the certificate is still being issued; run again after {}", fmt(at));
                    } else {
                        log::info!("nothing to do");
                    }
                    Ok(2)
                }
                Err(failure) => {
                    log::error!("{}", failure.error);
                    log::info!("the daemon would retry in {}s", failure.retry_in.as_secs());
                    Ok(1)
                }
            }
        }
        Command::Run => {
            let config = load_runtime(&file)?;
            logger::init(config.log_level);
            daemon::run(config, &|| load_runtime(&file))?;
            Ok(0)
        }
    }
}

fn fmt(t: i64) -> String {
    lancert_protocol::time::format_rfc3339(t)
}

/// Loads the configuration for everything but provisioning: the server URL
/// comes from the file, or else from the enrollment.
fn load_runtime(file: &std::path::Path) -> Result<Config> {
    let mut config = Config::load(file, false, false)?;
    if config.server.is_none() {
        if let Ok(Some(e)) = StateDir::new(&config.state_dir).enrollment() {
            config.server = Some(e.server);
        }
    }
    config.server_url()?;
    Ok(config)
}

fn read_token(source: &TokenSource) -> Result<String> {
    let token = match source {
        TokenSource::Literal(t) => t.clone(),
        TokenSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| Error::io("reading the enrollment token", path, e))?
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() || token.len() > 512 {
        return Err(Error::Other(
            "the enrollment token is empty or longer than 512 characters".into(),
        ));
    }
    Ok(token)
}
