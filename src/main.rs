//! The `authgate` command line: `run`, `check`, `reload`, `keys rotate`, `sessions list|revoke`,
//! `deny`, `--version`.

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
    /// See and end a user's sessions, through the running gateway's admin listener.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Refuse a user's bearer tokens for a while (or lift that), on every instance.
    Deny {
        #[command(flatten)]
        target: Target,
        /// How long, e.g. 30m, 1h, 7d.
        #[arg(long = "for", required_unless_present = "lift", conflicts_with = "lift")]
        duration: Option<String>,
        /// Lift the entry instead.
        #[arg(long)]
        lift: bool,
    },
}

/// Whom an operator's command is about, and which gateway carries it out.
#[derive(clap::Args)]
struct Target {
    /// The user's `sub`.
    #[arg(long)]
    user: String,
    /// The provider (by name in the config); default: every provider's user of that `sub`.
    #[arg(long)]
    provider: Option<String>,
    /// Configuration file (names the admin listener and, unless AUTHGATE_ADMIN_TOKEN is set,
    /// the admin token).
    #[arg(long, short, env = "AUTHGATE_CONFIG")]
    config: PathBuf,
    /// Admin listener to ask instead of the config's `admin_listen` (ip:port).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// List a user's sessions: id, provider, created, last used, end.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// End a user's sessions everywhere (or only one with --session).
    Revoke {
        #[command(flatten)]
        target: Target,
        /// Only this session (an id from `sessions list`).
        #[arg(long)]
        session: Option<String>,
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
        Command::Sessions { action: SessionsAction::List { target } } => list_sessions(&target),
        Command::Sessions { action: SessionsAction::Revoke { target, session } } => {
            let extra = session.map(|s| ("session", s));
            operate(&target, "POST", "/sessions/revoke", extra).map(|answer| {
                println!("ended {} session(s) of {}", answer["ended"], target.user);
            })
        }
        Command::Deny { target, duration, lift } => deny(&target, duration, lift),
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
    let answer = authgate::admin::request_reload(admin, token(&config).as_deref())
        .map_err(|e| anyhow::anyhow!("reload refused: {e}"))?;
    println!("{answer}");
    Ok(())
}

/// The admin token to send: `AUTHGATE_ADMIN_TOKEN` (a named token's holder), else the
/// config's `admin_token`, if any.
fn token(config: &authgate::config::Config) -> Option<String> {
    let from_env = std::env::var("AUTHGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    from_env.or_else(|| config.server.admin_token.as_ref().map(|t| t.expose().to_owned()))
}

/// Sends an operator's request about `target` to the admin listener; returns the JSON answer.
fn operate(
    target: &Target,
    method: &str,
    path: &str,
    extra: Option<(&str, String)>,
) -> anyhow::Result<serde_json::Value> {
    let config = authgate::config::load_file(&target.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = target.admin.or(config.server.admin_addr).context("server.admin_listen")?;
    let token = token(&config);
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("user", &target.user);
    if let Some(p) = &target.provider {
        query.append_pair("provider", p);
    }
    if let Some((name, value)) = &extra {
        query.append_pair(name, value);
    }
    let (status, body) = authgate::admin::client::request(
        admin,
        method,
        &format!("{path}?{}", query.finish()),
        token.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if status != 200 {
        anyhow::bail!("the gateway at {admin} refused ({status}): {body}");
    }
    Ok(answer)
}

fn list_sessions(target: &Target) -> anyhow::Result<()> {
    let answer = operate(target, "GET", "/sessions", None)?;
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    println!("{}: {} session(s)", target.user, sessions.len());
    if sessions.is_empty() {
        return Ok(());
    }
    let time = |v: &serde_json::Value| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(v.as_u64().unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    println!("{:<16}  {:<12}  {:<20}  {:<20}  {:<20}", "ID", "PROVIDER", "CREATED", "LAST USED", "EXPIRES");
    for s in sessions {
        println!(
            "{:<16}  {:<12}  {:<20}  {:<20}  {:<20}",
            s["id"].as_str().unwrap_or_default(),
            s["provider"].as_str().unwrap_or_default(),
            time(&s["created"]),
            time(&s["last_used"]),
            time(&s["expires"])
        );
    }
    Ok(())
}

fn deny(target: &Target, duration: Option<String>, lift: bool) -> anyhow::Result<()> {
    if lift {
        let answer = operate(target, "POST", "/deny/lift", None)?;
        match answer["still_denied_until"].as_u64() {
            Some(until) => println!(
                "lifted; {} stays denied until {} (the provider suspended the user)",
                target.user,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(until)
                )
            ),
            None => println!("lifted: {}'s bearer tokens are accepted again", target.user),
        }
        return Ok(());
    }
    let answer = operate(target, "POST", "/deny", duration.map(|d| ("for", d)))?;
    let until = answer["denied_until"].as_u64().unwrap_or(0);
    println!(
        "{}'s bearer tokens are refused until {}",
        target.user,
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(until))
    );
    Ok(())
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
        match authgate::admin::request_reload(admin, token(&config).as_deref()) {
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
    let logs = init_logging(&config.log).context("cannot start the log writer")?;
    let listen = config.server.listen.clone();
    let server = authgate::server::build(config, path).context("cannot start")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?listen, "authgate starting");
    server.run();
    tracing::info!("authgate stopped");
    // what is queued reaches stderr, unless it stays blocked for longer than this
    logs.finish(std::time::Duration::from_secs(2));
    Ok(())
}

/// The most verbose level Pingora's own records may log at.
const PINGORA_CAP: &str = "pingora=info";

/// Starts logging: lines go to stderr from the log writer's thread (never from a request's).
fn init_logging(log: &authgate::config::LogConfig) -> std::io::Result<authgate::log_writer::LogFlush> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level))
        // Pingora's debug records print whole request headers (cookies, Authorization, the
        // identity assertion): never below info, whatever the level asked for
        .add_directive(PINGORA_CAP.parse().unwrap_or_default())
        // the audit trail of operators' actions is kept whatever the level
        .add_directive("audit=info".parse().unwrap_or_default());
    // colours only for a person at a terminal, never into files or journald
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, flush) = authgate::log_writer::start_stderr(log.buffer_lines)?;
    let json = log.format == authgate::config::LogFormat::Json;
    authgate::log_writer::install_access_log(writer.clone(), json);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match log.format {
        authgate::config::LogFormat::Json => builder.json().init(),
        authgate::config::LogFormat::Text => builder.init(),
    }
    Ok(flush)
}
