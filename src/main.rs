//! The `kiln` binary: parse, dispatch, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use kiln::cli::Cli;
use kiln::exit::{ExitStatus, status_for};
use kiln::output::Printer;

/// mimalloc instead of glibc's malloc: at fleet scale kiln and its
/// simulator spent a fifth of their CPU in malloc and free (`kiln bench
/// fleet` measures the difference). Built without transparent huge pages:
/// with them, every 2 MiB page mimalloc faulted in again after returning
/// it was zeroed whole, a tenth of kiln's CPU at 12,500 nodes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help and version to stdout (exit 0) and usage
            // errors to stderr (exit 2, as kiln's contract says).
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    kiln::fdlimit::raise();
    let printer = Printer::new(cli.global.json, cli.global.quiet, cli.global.color);
    match kiln::commands::run(cli) {
        Ok(status) => status.into(),
        Err(err) => {
            let status = status_for(&err);
            printer.error(&err);
            if status == ExitStatus::Internal {
                printer.notice(
                    "this is a bug in kiln or a problem with this machine; rerun with -v for details",
                );
            }
            status.into()
        }
    }
}

/// Logs go to stderr; `-v`/`-q` pick the level and `RUST_LOG` overrides.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // `-q` keeps the warning that a BMC's certificate goes unchecked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("kiln={level},kiln::bmc::tls=warn")));
    let ansi =
        Printer::stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // The subscriber needs a `MakeWriter`; it writes whole lines to stderr.
        .with_writer(Printer::err)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
