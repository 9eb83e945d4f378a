//! `lancert-server`: parses the command line and maps the outcome to an exit
//! code; everything else is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match lancert_server::cli::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lancert-server: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
