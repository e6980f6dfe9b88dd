//! The binary edge: argument parsing, context on errors, exit codes, printing.
//!
//! Owns: the clap definitions of every `regauth` subcommand and the exit-code contract (0 ok,
//! 1 "no answer" or findings, 2 bad input or usage). Does not own any logic a library user would
//! need — each subcommand is a thin shell over a library module.

mod auth_config;
mod cache;
mod check;
mod completions;
mod healthcheck;
mod man;
mod proxy;
mod resolve;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use regauth::resolve::{Profile, Resolver};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

const ROOT_EXAMPLES: &str = "\
Examples:
  # Which credentials would docker use for this image, and why?
  regauth resolve --explain registry.example.com:5000/private/image:latest

  # The same image as GitLab Runner sees it (DOCKER_AUTH_CONFIG, ~/.docker/config.json, job)
  regauth resolve --profile gitlab registry.example.com:5000/namespace/image:tag

  # Validate the runner host's config before a job trips over it
  regauth check --profile gitlab --image registry.example.com:5000/private/image:latest

  # A per-runner DOCKER_AUTH_CONFIG line for config.toml (password on stdin, never in argv)
  printf '%s\\n' \"$REGISTRY_PASSWORD\" | regauth auth-config --registry registry.example.com:5000 \\
    --username my_username --password-stdin --toml

  # A runner sidecar: the verifying pull-through proxy in front of a private registry
  regauth proxy --listen 0.0.0.0:5000 --htpasswd /etc/regauth/htpasswd \\
    --upstream private=https://registry.example.com:5000

Exit status: 0 success; 1 no answer (resolve: no credentials; check: errors found; healthcheck:
unhealthy; cache verify: bad entries); 2 bad input, usage or a failure.
Logs: stderr, filter from --log-level, -v/-q or REGAUTH_LOG (a level applies to regauth's own
modules; a full filter such as \"debug,hyper=info\" is used as written).";

/// Safe, fast access to private container registries for CI runner hosts.
#[derive(Parser, Debug)]
#[command(name = "regauth", version, about, long_about = None, propagate_version = true,
    after_help = ROOT_EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

/// Log verbosity, for every subcommand.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// More log output on stderr: -v debug, -vv trace (regauth's own modules only).
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with_all = ["quiet", "log_level"])]
    pub verbose: u8,
    /// Errors only: no warnings or progress on stderr.
    #[arg(short, long, global = true, conflicts_with = "log_level")]
    pub quiet: bool,
    /// Log filter: a level (error, warn, info, debug, trace) for regauth's own modules, or a full
    /// tracing filter such as "debug,hyper=info". Overrides REGAUTH_LOG.
    #[arg(long, global = true, value_name = "LEVEL|FILTER")]
    pub log_level: Option<String>,
}

impl LogArgs {
    /// The level the flags ask for, if any.
    pub fn level(&self) -> Option<String> {
        match (self.verbose, self.quiet, &self.log_level) {
            (_, _, Some(l)) => Some(l.clone()),
            (_, true, None) => Some("error".into()),
            (0, false, None) => None,
            (1, false, None) => Some("debug".into()),
            (_, false, None) => Some("trace".into()),
        }
    }
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// True under `-q`: commands print no warnings or progress.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Sets up the stderr log for a command through [`regauth::logging::filter`].
pub fn init_logging(level: Option<&str>, default_level: &str, json: bool) {
    let env = std::env::var(regauth::logging::LOG_ENV).ok();
    let (filter, warning) = regauth::logging::filter(level, env.as_deref(), default_level);
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which credentials apply to an image or registry host, and where they come from.
    #[command(after_help = resolve::EXAMPLES)]
    Resolve(resolve::ResolveArgs),
    /// Validate the effective Docker config and report problems.
    #[command(after_help = check::EXAMPLES)]
    Check(check::CheckArgs),
    /// Print a DOCKER_AUTH_CONFIG value (or the config.toml `environment` line) for registries.
    #[command(after_help = auth_config::EXAMPLES)]
    AuthConfig(auth_config::AuthConfigArgs),
    /// Probe a running proxy's /healthz (exit 0 healthy, 1 not): the container HEALTHCHECK.
    #[command(after_help = healthcheck::EXAMPLES)]
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = completions::EXAMPLES)]
    Completions(completions::CompletionsArgs),
    /// Write man pages for regauth and the docker-credential-* helpers into a folder.
    #[command(hide = true, after_help = man::EXAMPLES)]
    Man(man::ManArgs),
    /// Run the verifying pull-through auth proxy.
    #[command(after_help = proxy::EXAMPLES)]
    Proxy(Box<proxy::ProxyArgs>),
    /// Inspect, verify and prune the proxy cache.
    #[command(after_help = cache::EXAMPLES)]
    Cache(cache::CacheArgs),
}

/// Options shared by every command that resolves credentials.
#[derive(Args, Debug, Clone)]
pub struct ResolverArgs {
    /// Whose rules to follow: the docker CLI's or GitLab Runner's.
    #[arg(long, value_enum, default_value_t = Profile::Docker)]
    pub profile: Profile,
    /// Folder holding config.json (instead of $DOCKER_CONFIG, or $HOME/.docker for the gitlab profile).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

impl ResolverArgs {
    pub fn resolver(&self) -> Resolver {
        let mut r = Resolver::new(self.profile);
        r.config_dir = self.config_dir.clone();
        r
    }
}

/// Parses arguments, runs the command and returns the exit status. The one place errors are
/// printed: `error: …` then a `Caused by:` block per cause, each cause once.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // Checks clap cannot express (duplicate aliases): reported exactly like a parse error.
    if let Command::Proxy(a) = &cli.command
        && let Err(msg) = proxy::validate(a)
    {
        let _ = Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .print();
        return 2;
    }
    QUIET.store(cli.log.quiet, Ordering::Relaxed);
    let level = cli.log.level();
    if !matches!(cli.command, Command::Proxy(_)) {
        init_logging(level.as_deref(), "warn", false);
    }
    let result = match cli.command {
        Command::Resolve(a) => resolve::run(a),
        Command::Check(a) => check::run(a),
        Command::AuthConfig(a) => auth_config::run(a),
        Command::Healthcheck(a) => healthcheck::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
        Command::Proxy(a) => proxy::run(*a, level.as_deref()),
        Command::Cache(a) => cache::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", regauth::report::cargo_style(e.as_ref()));
            2
        }
    }
}
