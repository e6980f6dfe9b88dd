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

use clap::{Args, Parser, Subcommand};
use regauth::resolve::{Profile, Resolver};
use std::path::PathBuf;

/// Safe, fast access to private container registries for CI runner hosts.
#[derive(Parser, Debug)]
#[command(name = "regauth", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which credentials apply to an image or registry host, and where they come from.
    Resolve(resolve::ResolveArgs),
    /// Validate the effective Docker config and report problems.
    Check(check::CheckArgs),
    /// Print a DOCKER_AUTH_CONFIG value (or the config.toml `environment` line) for registries.
    AuthConfig(auth_config::AuthConfigArgs),
    /// Probe a running proxy's /healthz (exit 0 healthy, 1 not): the container HEALTHCHECK.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(completions::CompletionsArgs),
    /// Write man pages for regauth and the docker-credential-* helpers into a folder.
    #[command(hide = true)]
    Man(man::ManArgs),
    /// Run the verifying pull-through auth proxy.
    Proxy(Box<proxy::ProxyArgs>),
    /// Inspect, verify and prune the proxy cache.
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

/// Parses arguments, runs the command and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Resolve(a) => resolve::run(a),
        Command::Check(a) => check::run(a),
        Command::AuthConfig(a) => auth_config::run(a),
        Command::Healthcheck(a) => healthcheck::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
        Command::Proxy(a) => proxy::run(*a),
        Command::Cache(a) => cache::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("regauth: {e:#}");
            2
        }
    }
}
