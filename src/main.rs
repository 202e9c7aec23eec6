//! The `presize` binary: parse arguments, call the library, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = presize::cli::parse_or_exit();
    let code = match presize::cli::dispatch(cli).map_err(anyhow::Error::from) {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<presize::Error>()
                .map_or(presize::exit_codes::STORE, presize::Error::exit_code);
            // One line whatever the message holds (a path with a newline, terminal escapes),
            // and no panic when stderr is closed.
            presize::cli::say(&format!(
                "presize: error: {}",
                presize::cli::printable(&e.to_string())
            ));
            code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
