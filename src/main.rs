//! The `nmr` binary: `nmr [--config FILE]` serves the registry;
//! `nmr [--config FILE] healthcheck` asks a running one for `/-/ping` (the
//! container health check: the image has no curl); `nmr migrate --to s3`
//! copies a local registry's metadata into the bucket (`src/migrate.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A private npm registry whose permissions come from GitHub.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML file layered over the built-in defaults (config/nmr.toml);
    /// NMR_* environment variables override both.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Exit 0 if the nmr configured here answers GET /-/ping with 200 on
    /// 127.0.0.1, else 1.
    Healthcheck,
    /// Copy this registry's metadata (db.path) into the bucket of
    /// [storage.s3] and verify it, so it can run with db.type = "s3".
    /// Offline: stop nmr first. Idempotent.
    Migrate {
        /// Where to: `s3`.
        #[arg(long, value_parser = ["s3"])]
        to: String,
    },
}

/// `logger.level` as an env_logger filter: a bare level (`info`) applies to
/// nmr's own log while other crates log warnings and errors only; a full
/// filter (`nmr=debug,warp=info`) is taken as written.
fn log_filter(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("warn,nmr={level}")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match nmr::config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nmr: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck) = cli.command {
        return match nmr::server::healthcheck(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nmr healthcheck: {e}");
                ExitCode::from(1)
            }
        };
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| log_filter(&config.logger.level));
    env_logger::Builder::new().parse_filters(&filter).init();

    // This runtime runs startup, the accept loop, background tasks and
    // `nmr migrate`; connections are served on the worker threads
    // (src/workers.rs), each with its own runtime and blocking pool. A
    // bound on blocking threads keeps memory flat under load.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nmr: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Migrate { .. }) = cli.command {
        return match runtime.block_on(nmr::migrate::to_s3(&config)) {
            Ok(r) => {
                println!(
                    "migrated to the bucket: {} packages copied, {} already there, {} versions, {} tokens, {} trust configurations; verified",
                    r.copied, r.unchanged, r.versions, r.tokens, r.trust
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nmr migrate: {e}");
                ExitCode::from(2)
            }
        };
    }
    match runtime.block_on(nmr::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nmr: {e}");
            ExitCode::from(2)
        }
    }
}
