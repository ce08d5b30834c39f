//! Exit codes, defined once and listed in `--help` of every command.

use std::process::ExitCode;

/// Everything asked was done.
pub const OK: u8 = 0;
/// regsaga could not do what was asked: bad configuration, a store it
/// cannot open, an unreadable input file. The message says which.
pub const ERROR: u8 = 1;
/// The command line itself was wrong (clap reports it).
pub const USAGE: u8 = 2;
/// Some input records were rejected; every other record was processed.
pub const REJECTED: u8 = 3;
/// Every record was processed, and some registrations ended `Failed`.
pub const FAILED: u8 = 4;
/// Interrupted (Ctrl-C or SIGTERM); unfinished sagas stay resumable.
pub const INTERRUPTED: u8 = 130;

/// The help text's section on exit codes.
pub const HELP: &str = "\
Exit codes:
  0    success
  1    error (configuration, store, input file); the message says what to do
  2    invalid command line
  3    some input records were rejected; all others were processed
  4    some registrations ended Failed (no profile could be created)
  130  interrupted: run the same command again to finish (`run` also reads
       the input it did not get to; `resume` finishes sagas already begun)
When several apply, the first in this list wins (1, then 130, then 3, then 4).";

pub fn code(value: u8) -> ExitCode {
    ExitCode::from(value)
}
