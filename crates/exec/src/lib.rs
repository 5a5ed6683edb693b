//! Running external tools (iptables-restore, nft, ipset, ...). The only place that
//! spawns them, behind [`Runner`] so tests can record calls or run them inside a
//! network namespace; the real runner passes stdin and captures both outputs.
//!
//! Large inputs and outputs (an `iptables-restore` of a 50,000-Service ruleset is
//! 170 MB) can be streamed: [`Runner::run_writing`] lets the caller write standard
//! input as the program reads it, and [`Runner::run_reading`] hands the caller
//! standard output as the program writes it, so neither is held in memory whole.
//! Runners that only implement [`Runner::run`] get buffering versions of both.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
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

/// Writes a program's standard input (see [`Runner::run_writing`]).
pub type InputWriter<'a> = dyn FnMut(&mut dyn Write) -> std::io::Result<()> + 'a;

/// Reads a program's standard output (see [`Runner::run_reading`]).
pub type OutputReader<'a> = dyn FnMut(&mut dyn BufRead) -> std::io::Result<()> + 'a;

/// Runs a program with arguments and optional standard input.
pub trait Runner: Send + Sync {
    /// Runs `program args...`, feeding `stdin` if given.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output>;

    /// Runs `program args...` with standard input written by `input` while the
    /// program runs. If the program exits before reading everything, the rest is
    /// discarded and its output tells why. The default writes the input into memory
    /// first and calls [`Runner::run`].
    fn run_writing(
        &self,
        program: &str,
        args: &[&str],
        input: &mut InputWriter<'_>,
    ) -> std::io::Result<Output> {
        let mut data = Vec::new();
        input(&mut data)?;
        self.run(program, args, Some(&data))
    }

    /// Runs `program args...` (no standard input) and hands its standard output to
    /// `output` as it comes; the returned [`Output::stdout`] is empty. If `output`
    /// fails, the program is killed and the error returned. The default runs
    /// [`Runner::run`] and reads the captured output.
    fn run_reading(
        &self,
        program: &str,
        args: &[&str],
        output: &mut OutputReader<'_>,
    ) -> std::io::Result<Output> {
        let mut out = self.run(program, args, None)?;
        let stdout = std::mem::take(&mut out.stdout);
        if out.success() {
            output(&mut stdout.as_bytes())?;
        }
        Ok(out)
    }
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

    fn run_writing(
        &self,
        program: &str,
        args: &[&str],
        input: &mut InputWriter<'_>,
    ) -> std::io::Result<Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        std::thread::scope(|scope| {
            // The program's output is drained on another thread while this one
            // writes, so neither side can block the other.
            let collector = scope.spawn(move || child.wait_with_output());
            let written = match stdin {
                Some(pipe) => {
                    let mut pipe = BufWriter::with_capacity(1 << 16, pipe);
                    input(&mut pipe).and_then(|()| pipe.flush())
                }
                None => Ok(()),
            };
            let out = collector
                .join()
                .map_err(|_| std::io::Error::other("output collector panicked"))??;
            match written {
                // The program stopped reading (it failed, or it is done): its
                // exit status and messages say what happened.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) if out.status.success() => return Err(e),
                _ => {}
            }
            Ok(to_output(out))
        })
    }

    fn run_reading(
        &self,
        program: &str,
        args: &[&str],
        output: &mut OutputReader<'_>,
    ) -> std::io::Result<Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        std::thread::scope(|scope| {
            let errors = scope.spawn(move || {
                let mut text = Vec::new();
                if let Some(mut pipe) = stderr {
                    let _ = pipe.read_to_end(&mut text);
                }
                text
            });
            let read = match stdout {
                Some(pipe) => {
                    let mut reader = BufReader::with_capacity(1 << 16, pipe);
                    // What the reader leaves is drained, so the program never blocks
                    // on a full pipe.
                    output(&mut reader)
                        .and_then(|()| std::io::copy(&mut reader, &mut std::io::sink()).map(drop))
                }
                None => Ok(()),
            };
            if read.is_err() {
                let _ = child.kill();
            }
            let status = child.wait()?;
            let stderr = errors
                .join()
                .map_err(|_| std::io::Error::other("error collector panicked"))?;
            read?;
            Ok(Output {
                status: status.code().unwrap_or(-1),
                stdout: String::new(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            })
        })
    }
}

fn to_output(out: std::process::Output) -> Output {
    Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// 8 MB streamed through `wc -c` arrive whole, more than a pipe holds, so the
    /// writer and the output collector really run side by side.
    #[test]
    fn large_input_is_streamed() {
        let chunk = vec![b'x'; 1 << 20];
        let out = ProcessRunner
            .run_writing("wc", &["-c"], &mut |w| {
                for _ in 0..8 {
                    w.write_all(&chunk)?;
                }
                Ok(())
            })
            .unwrap();
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout.trim(), (8usize << 20).to_string());
    }

    /// A program that exits without reading: its status and messages are the
    /// result, not the broken pipe.
    #[test]
    fn early_exit_reports_the_program() {
        let chunk = vec![b'x'; 1 << 20];
        let out = ProcessRunner
            .run_writing("sh", &["-c", "echo refused >&2; exit 3"], &mut |w| {
                for _ in 0..8 {
                    w.write_all(&chunk)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stderr.trim(), "refused");
    }

    /// A writer's own error is returned when the program did not fail.
    #[test]
    fn writer_errors_are_returned() {
        let err = ProcessRunner
            .run_writing("cat", &[], &mut |_| {
                Err(std::io::Error::other("render failed"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "render failed");
    }

    /// Output is handed over as it comes; what the reader leaves is drained, so the
    /// program ends even when it writes more than a pipe holds.
    #[test]
    fn output_is_streamed_and_drained() {
        let mut first = String::new();
        let out = ProcessRunner
            .run_reading("seq", &["1", "1000000"], &mut |r| {
                r.read_line(&mut first)?;
                Ok(())
            })
            .unwrap();
        assert!(out.success());
        assert_eq!(first, "1\n");
        assert!(out.stdout.is_empty());

        let mut lines = 0;
        let out = ProcessRunner
            .run_reading(
                "sh",
                &["-c", "seq 1 100000; echo done >&2; exit 4"],
                &mut |r| {
                    lines = r.lines().count();
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!((out.status, lines, out.stderr.trim()), (4, 100000, "done"));
    }

    /// The buffering defaults behave like the streaming versions.
    #[test]
    fn defaults_buffer() {
        struct Plain;
        impl Runner for Plain {
            fn run(&self, p: &str, a: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
                ProcessRunner.run(p, a, stdin)
            }
        }
        let out = Plain
            .run_writing("wc", &["-c"], &mut |w| w.write_all(b"12345"))
            .unwrap();
        assert_eq!(out.stdout.trim(), "5");
        let mut text = String::new();
        Plain
            .run_reading("echo", &["hello"], &mut |r| {
                r.read_to_string(&mut text).map(drop)
            })
            .unwrap();
        assert_eq!(text, "hello\n");
    }
}
