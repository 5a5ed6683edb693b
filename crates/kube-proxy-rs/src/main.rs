//! The `kube-proxy-rs` binary: parse the command line, then dry-run, clean up or run.

use std::process::ExitCode;
use std::sync::Arc;

use kube_proxy_rs::app;
use kube_proxy_rs::host::RealHost;

fn init_logging(verbosity: u32) {
    let level = match verbosity {
        0..=1 => "info",
        2..=3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let flags = match kpr_config::parse_flags(std::env::args_os()) {
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
    init_logging(config.verbosity());
    for w in &loaded.warnings {
        tracing::warn!("{w}");
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
        return match app::dry_run(&config, &dir, host.as_ref()) {
            Ok((out, _notes)) => {
                // Problems and allocations were logged (stderr) while reading.
                print!("{out}");
                ExitCode::SUCCESS
            }
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
