//! The `kube-proxy-rs` binary: parse the command line, then dry-run, clean up, run,
//! or one of the operator tools (`show`, `check`).

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use kube_proxy_rs::host::RealHost;
use kube_proxy_rs::{app, check, show};

/// `logging.format`: `text` (default) or `json`, one object per line.
fn init_logging(verbosity: u32, json: bool) {
    let level = match verbosity {
        0..=1 => "info",
        2..=3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// An operator tool given as the first argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Show,
    Check,
}

/// Takes `show`/`check` and their `--output`/`-o` flag off the command line; the
/// rest are kube-proxy flags (`--config`, `--proxy-mode`, ...) as for a run.
fn split_tool(mut args: Vec<OsString>) -> Result<(Option<Tool>, bool, Vec<OsString>), String> {
    let tool = match args.get(1).and_then(|a| a.to_str()) {
        Some("show") => Tool::Show,
        Some("check") => Tool::Check,
        _ => return Ok((None, false, args)),
    };
    args.remove(1);
    let mut json = false;
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy().into_owned();
        let value = if let Some(v) = arg.strip_prefix("--output=") {
            args.remove(i);
            v.to_string()
        } else if arg == "--output" || arg == "-o" {
            args.remove(i);
            if i >= args.len() {
                return Err(format!("{arg} needs a value: text or json"));
            }
            args.remove(i).to_string_lossy().into_owned()
        } else {
            i += 1;
            continue;
        };
        json = match value.as_str() {
            "json" => true,
            "text" => false,
            other => return Err(format!("--output {other:?}: must be text or json")),
        };
    }
    Ok((Some(tool), json, args))
}

fn main() -> ExitCode {
    let (tool, json_output, args) = match split_tool(std::env::args_os().collect()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let flags = match kpr_config::parse_flags(args) {
        Ok(f) => f,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, naming the flag and the value.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid command line").trim();
            eprintln!("{}", line.strip_prefix("error: ").unwrap_or(line));
            return ExitCode::from(1);
        }
    };
    let loaded = match kpr_config::load(&flags) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let config = loaded.config;
    if flags.version.is_some() {
        println!(
            "kube-proxy-rs {} (compatible with kube-proxy v1.35)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    init_logging(config.verbosity(), config.logging.format == "json");
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if let Some(tool) = tool {
        return run_tool(tool, json_output, &config, flags.manifests.clone());
    }
    if let Some(path) = &flags.write_config_to {
        let text = match serde_json::to_string_pretty(&config) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot encode configuration: {e}");
                return ExitCode::from(1);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("--write-config-to {}: {e}", path.display());
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    if flags.cleanup {
        return match app::cleanup() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::from(1)
            }
        };
    }
    let host = Arc::new(RealHost);
    if flags.dry_run {
        let Some(dir) = flags.manifests.clone() else {
            eprintln!("--dry-run needs --manifests DIR (it prints the rules for those objects)");
            return ExitCode::from(1);
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let written = app::dry_run(&config, &dir, host.as_ref(), &mut out)
            .and_then(|notes| out.flush().map(|()| notes).map_err(Into::into));
        return match written {
            // Problems and allocations were logged (stderr) while reading.
            Ok(_notes) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::from(1)
            }
        };
    }
    let input = match flags.manifests.clone() {
        Some(dir) => app::Input::Manifests(dir),
        None => app::Input::Api(kpr_kube_source::ClientSettings::from_config(
            &config.client_connection,
            flags.master.as_deref(),
        )),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(app::run_proxy(config, input, host)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// `show` and `check`.
fn run_tool(
    tool: Tool,
    json: bool,
    config: &kpr_config::KubeProxyConfiguration,
    manifests: Option<std::path::PathBuf>,
) -> ExitCode {
    match tool {
        Tool::Show => {
            let args = show::ShowArgs { manifests };
            match show::collect(config, &args, &RealHost) {
                Ok(report) => {
                    if json {
                        print_json(&report);
                    } else {
                        print!("{}", show::render_text(&report));
                    }
                    let drifted = report.drift.as_ref().is_some_and(|d| !d.is_empty());
                    ExitCode::from(if drifted { 2 } else { 0 })
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Tool::Check => {
            let runner: Arc<dyn kpr_iptables::exec::Runner> =
                Arc::new(kpr_iptables::exec::ProcessRunner);
            let facts = check::gather(config, &RealHost, &runner);
            let findings = check::evaluate(&facts);
            if json {
                print_json(&findings);
            } else {
                print!("{}", check::render_text(&findings));
            }
            ExitCode::from(check::exit_status(&findings))
        }
    }
}

/// Prints a report as pretty JSON.
fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("cannot encode the report: {e}"),
    }
}
