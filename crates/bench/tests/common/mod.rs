//! Shared by the bench's end-to-end tests.

use std::process::Command;

/// Runs `kpr-bench` with `args`; fails the test (with both outputs) unless it
/// succeeds; returns its stdout.
pub fn bench_ok(args: &mut Command) -> String {
    let out = args.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A `kpr-bench` command.
pub fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kpr-bench"))
}
