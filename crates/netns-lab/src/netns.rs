//! Named network namespaces with drop guards.
//!
//! Each namespace gets a unique name (`kpr<pid>x<n><role>`), so tests can run in
//! parallel, and is deleted when its handle drops, even when a test panics: processes
//! still running inside are killed first, then `ip netns del` removes it (links whose
//! both ends live in deleted namespaces disappear with them).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CloneFlags, setns};

use crate::LabError;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that exists until this handle is dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Runs a command, turning failure into an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

impl Netns {
    /// Creates a fresh namespace; `role` (a few letters) makes its name readable.
    /// Loopback is brought up.
    pub fn new(role: &str) -> Result<Self, LabError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("kpr{}x{n}{role}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // No duplicate address detection: addresses (link-local ones too) are usable
        // at once instead of "tentative" for a second or two.
        ns.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `program args` inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, LabError> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ip args` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a shell script inside the namespace; returns its stdout.
    pub fn sh(&self, script: &str) -> Result<String, LabError> {
        let out = self.exec("sh", &["-c", script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `Command` that runs `program` inside the namespace (for long-running
    /// processes the caller manages).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a new thread that has entered the namespace, and waits for it.
    /// Sockets created by `f` live in the namespace.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LabError> {
        self.spawn(f)?.join().map_err(|_| LabError::ThreadPanicked)
    }

    /// Starts `f` on a new thread inside the namespace (for servers).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, LabError> {
        let file = File::open(self.path()).map_err(|e| LabError::Command {
            command: format!("open {}", self.path().display()),
            message: e.to_string(),
        })?;
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                // setns affects only this thread.
                let entered = setns(&file, CloneFlags::CLONE_NEWNET);
                let ok = entered.is_ok();
                let _ = tx.send(entered.map_err(|e| e.to_string()));
                if !ok {
                    panic!("setns failed");
                }
                f()
            })
            .map_err(|e| LabError::Command {
                command: "spawn thread".into(),
                message: e.to_string(),
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(message)) => Err(LabError::Command {
                command: format!("setns {name}"),
                message,
            }),
            Err(_) => Err(LabError::ThreadPanicked),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
