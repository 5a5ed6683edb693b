//! Running external tools (iptables-restore, nft, ipset, ...). The only place that
//! spawns them, behind [`Runner`] so tests can record calls or run them inside a
//! network namespace; the real runner passes stdin and captures both outputs.

use std::io::Write;
use std::process::{Command, Stdio};

/// The result of one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status code (-1 if killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// True for exit status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Runs a program with arguments and optional standard input.
pub trait Runner: Send + Sync {
    /// Runs `program args...`, feeding `stdin` if given.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output>;
}

/// Runs real processes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessRunner;

impl Runner for ProcessRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn()?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A writer thread avoids a deadlock when the child fills its output pipes
            // before reading all of its (possibly large) input.
            let data = data.to_vec();
            let writer = std::thread::spawn(move || pipe.write_all(&data));
            let out = child.wait_with_output()?;
            let _ = writer.join();
            return Ok(to_output(out));
        }
        Ok(to_output(child.wait_with_output()?))
    }
}

fn to_output(out: std::process::Output) -> Output {
    Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
