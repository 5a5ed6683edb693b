//! Real-kernel tests for features the host kernel may lack (IPVS, dummy, ...): a
//! tiny test harness for `harness = false` test binaries.
//!
//! [`run`] loads the kernel modules a suite needs and, when the feature is there,
//! runs every selected test, each in a fresh network namespace on its own thread,
//! catching panics and printing libtest's lines (`test NAME ... ok`, `test result:
//! ok. N passed; M failed; ...`); the exit status is 1 when a test failed. When the
//! feature is missing it re-executes the same binary, with the same arguments,
//! inside a throwaway VM (`shared/tools/vm-run` beside the repository, Debian's
//! stock kernel), where `KPR_IN_VM=1` stops a second re-execution, and exits with
//! the VM's status. Without the runner it fails with a message naming the path:
//! a test that cannot run must not pass.
//!
//! Arguments follow libtest loosely: words are name filters (substring, or exact
//! with `--exact`), `--skip WORD` excludes, `--list` lists without running
//! anything, `--ignored` selects nothing (no test here is ignored); other flags
//! (`--nocapture`, `--test-threads N`, ...) are accepted and ignored (tests run
//! one at a time).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Netns;

/// Set in the VM's environment by the re-execution.
pub const IN_VM_VAR: &str = "KPR_IN_VM";

/// One test: a name and a function run inside a fresh namespace (given to it).
#[derive(Clone, Copy, Debug)]
pub struct Test {
    /// The name filters match against.
    pub name: &'static str,
    /// The test; it fails by panicking.
    pub run: fn(&Netns),
}

/// A suite of tests that need one kernel feature.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    /// What the tests need, for messages (`IPVS`).
    pub feature: &'static str,
    /// Kernel modules to load first (`modprobe`), in order; a module that fails
    /// to load is reported, and only the probe decides whether to go on.
    pub modules: &'static [&'static str],
    /// A path that exists when the feature is available (`/proc/net/ip_vs`).
    pub probe: &'static str,
    /// Longest time one test may take before the whole run fails.
    pub test_timeout: Duration,
    /// The tests.
    pub tests: &'static [Test],
}

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    /// `--ignored`: only ignored tests, and none of these is.
    only_ignored: bool,
}

fn parse_args(args: &[String]) -> Args {
    let mut parsed = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--exact" => parsed.exact = true,
            "--list" => parsed.list = true,
            "--ignored" => parsed.only_ignored = true,
            "--skip" => parsed.skip.extend(it.next().cloned()),
            // libtest options with a separate value.
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" | "--shuffle-seed" => {
                it.next();
            }
            a if a.starts_with('-') => {}
            a => parsed.filters.push(a.to_string()),
        }
    }
    parsed
}

impl Args {
    fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        !self.only_ignored
            && (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skip.iter().any(|s| name.contains(s.as_str()))
    }
}

/// Runs `suite` here or in the VM (see the module doc); the binary's `main`
/// returns this.
pub fn run(suite: &Suite) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = parse_args(&args);
    let selected: Vec<Test> = suite
        .tests
        .iter()
        .copied()
        .filter(|t| parsed.selects(t.name))
        .collect();
    if parsed.list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        return ExitCode::SUCCESS;
    }
    let filtered_out = suite.tests.len() - selected.len();
    if selected.is_empty() {
        println!("\nrunning 0 tests\n");
        println!(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in 0.00s\n"
        );
        return ExitCode::SUCCESS;
    }
    let load_errors = load_modules(suite.modules);
    if Path::new(suite.probe).exists() {
        return run_here(suite, &selected, filtered_out);
    }
    if std::env::var_os(IN_VM_VAR).is_some() {
        eprintln!(
            "error: {} is not available inside the VM ({} missing); modprobe said:\n{}",
            suite.feature,
            suite.probe,
            load_errors.join("\n")
        );
        return ExitCode::FAILURE;
    }
    rerun_in_vm(suite, &args, &vm_runner())
}

/// Loads each module; returns the failures' messages.
fn load_modules(modules: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    for module in modules {
        match Command::new("modprobe")
            .arg(module)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => errors.push(format!(
                "modprobe {module}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("modprobe {module}: {e}")),
        }
    }
    errors
}

/// `shared/tools/vm-run` beside the repository this crate is part of
/// (`<repo>/../shared/tools/vm-run`).
pub fn vm_runner() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/vm-run");
    path.canonicalize().unwrap_or(path)
}

fn rerun_in_vm(suite: &Suite, args: &[String], runner: &Path) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this test binary to run it in a VM: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !runner.exists() {
        eprintln!(
            "error: the host kernel has no {} ({} missing) and the VM runner {} does not \
             exist: these tests cannot run here",
            suite.feature,
            suite.probe,
            runner.display()
        );
        return ExitCode::FAILURE;
    }
    eprintln!(
        "{}: no {} in the host kernel; running {} in a VM ({})",
        exe.file_name()
            .map_or("tests".into(), |n| n.to_string_lossy()),
        suite.feature,
        exe.display(),
        runner.display()
    );
    let started = Instant::now();
    let status = Command::new(runner)
        .arg("--")
        .arg("env")
        .arg(format!("{IN_VM_VAR}=1"))
        .arg(&exe)
        .args(args)
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) => {
            eprintln!(
                "VM run finished in {:.1}s ({status})",
                started.elapsed().as_secs_f64()
            );
            match status.code() {
                Some(0) => ExitCode::SUCCESS,
                Some(125) => {
                    eprintln!("error: the VM itself failed (vm-run exit 125)");
                    ExitCode::FAILURE
                }
                Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                None => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", runner.display());
            ExitCode::FAILURE
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_string()
    }
}

/// Runs one test in a fresh namespace; `Err` holds why it failed.
fn run_one(test: Test, timeout: Duration) -> Result<(), String> {
    let ns = Arc::new(Netns::new("vt").map_err(|e| format!("creating its namespace: {e}"))?);
    let inner = Arc::clone(&ns);
    let (tx, rx) = mpsc::channel();
    let _thread = ns
        .spawn(move || {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (test.run)(&inner)));
            drop(inner);
            let _ = tx.send(outcome.map_err(|p| panic_message(p.as_ref())));
        })
        .map_err(|e| format!("entering its namespace: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(outcome) => outcome,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("timed out after {} s", timeout.as_secs()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("its thread died".into()),
    }
}

fn run_here(suite: &Suite, selected: &[Test], filtered_out: usize) -> ExitCode {
    let started = Instant::now();
    println!("\nrunning {} tests", selected.len());
    let mut failures: Vec<(&str, String)> = Vec::new();
    let mut ran = 0usize;
    for test in selected {
        ran += 1;
        let t = Instant::now();
        let outcome = run_one(*test, suite.test_timeout);
        let secs = t.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("test {} ... ok <{secs:.3}s>", test.name),
            Err(why) => {
                println!("test {} ... FAILED <{secs:.3}s>", test.name);
                let timed_out = why.starts_with("timed out");
                failures.push((test.name, why));
                if timed_out {
                    // Its thread still runs and may hold the kernel state: stop here.
                    break;
                }
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, why) in &failures {
            println!("---- {name} ----\n{why}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    let failed = failures.len();
    let passed = ran - failed;
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; \
         {filtered_out} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Args {
        parse_args(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    /// Filters and flags are read as libtest reads them.
    #[test]
    fn arguments() {
        let a = args(&[
            "--nocapture",
            "svc",
            "--test-threads",
            "1",
            "--skip",
            "slow",
        ]);
        assert_eq!(a.filters, vec!["svc".to_string()]);
        assert!(a.selects("add_svc") && !a.selects("add_svc_slow") && !a.selects("dest"));
        let e = args(&["--exact", "svc"]);
        assert!(e.selects("svc") && !e.selects("add_svc"));
        assert!(args(&[]).selects("anything"));
        assert!(args(&["--list", "--format", "terse"]).list);
        assert!(!args(&["--ignored"]).selects("anything"));
    }

    /// The runner is looked for beside the repository.
    #[test]
    fn runner_path() {
        assert!(vm_runner().ends_with("shared/tools/vm-run"));
    }

    /// Without the runner the suite fails (it does not pass untested).
    #[test]
    fn missing_runner_fails() {
        let suite = Suite {
            feature: "nothing",
            modules: &[],
            probe: "/nonexistent",
            test_timeout: Duration::from_secs(1),
            tests: &[],
        };
        let code = rerun_in_vm(&suite, &[], Path::new("/nonexistent/vm-run"));
        assert_eq!(code, ExitCode::FAILURE);
    }
}
