//! The `authgate` command line: `run`, `check`, `reload`, `keys rotate`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: per-thread free lists suit many short requests
/// on several worker threads (glibc's malloc was 15% of a proxied request's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "authgate", version, about = "An OpenID Connect authentication gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with the given configuration.
    Run {
        /// Configuration file.
        #[arg(long, short, env = "AUTHGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration and print its route table.
    Check {
        /// Configuration file.
        #[arg(long, short, env = "AUTHGATE_CONFIG")]
        config: PathBuf,
    },
    /// Make the running gateway (the one whose admin listener this config names) reload it.
    Reload {
        /// Configuration file.
        #[arg(long, short, env = "AUTHGATE_CONFIG")]
        config: PathBuf,
    },
    /// Manage the identity-assertion signing key.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Replace the signing key: new assertions use the new key at once (the running gateway is
    /// asked to reload), and the previous key stays published until its assertions expire.
    Rotate {
        /// Configuration file.
        #[arg(long, short, env = "AUTHGATE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // one process-wide TLS provider, before anything builds a rustls config
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
        Command::Reload { config } => reload(&config),
        Command::Keys { action: KeysAction::Rotate { config } } => rotate(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = authgate::config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    print!("{}", authgate::gateway::route_table(&config));
    println!("{}: OK", path.display());
    Ok(())
}

fn reload(path: &std::path::Path) -> anyhow::Result<()> {
    // validate here first: the running gateway would refuse the same file, less readably
    let config = authgate::config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = config.server.admin_addr.context("server.admin_listen")?;
    let answer = authgate::admin::request_reload(admin, token(&config))
        .map_err(|e| anyhow::anyhow!("reload refused: {e}"))?;
    println!("{answer}");
    Ok(())
}

/// The admin token `POST /reload` needs, if configured.
fn token(config: &authgate::config::Config) -> Option<&str> {
    config.server.admin_token.as_ref().map(|t| t.expose())
}

fn rotate(path: &std::path::Path) -> anyhow::Result<()> {
    let config = authgate::config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let a = &config.assertion;
    let kid = authgate::assertion::keys::rotate(&a.key_file, &a.algorithm, a.lifetime.get())?;
    println!(
        "{}: new key {kid}; the previous key stays published for {}",
        a.key_file.display(),
        humantime::format_duration(a.lifetime.get())
    );
    // the running gateway (if any) picks it up now; other instances sharing the file on reload
    if let Some(admin) = config.server.admin_addr {
        match authgate::admin::request_reload(admin, token(&config)) {
            Ok(_) => println!("the gateway at {admin} reloaded"),
            Err(e) => println!(
                "the gateway at {admin} did not reload ({e}); run `authgate reload` on every instance"
            ),
        }
    }
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = authgate::config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&config.log);
    let listen = config.server.listen.clone();
    let server = authgate::server::build(config, path).context("cannot start")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?listen, "authgate starting");
    server.run_forever()
}

/// The most verbose level Pingora's own records may log at.
const PINGORA_CAP: &str = "pingora=info";

fn init_logging(log: &authgate::config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level))
        // Pingora's debug records print whole request headers (cookies, Authorization, the
        // identity assertion): never below info, whatever the level asked for
        .add_directive(PINGORA_CAP.parse().unwrap_or_default());
    // colours only for a person at a terminal, never into files or journald
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match log.format {
        authgate::config::LogFormat::Json => builder.json().init(),
        authgate::config::LogFormat::Text => builder.init(),
    }
}
