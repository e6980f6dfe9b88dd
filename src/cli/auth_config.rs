//! `regauth auth-config`: build a `DOCKER_AUTH_CONFIG` value without hand-written base64 or
//! hand-escaped TOML — the seed's pain point.

use anyhow::{Context, bail};
use clap::Args;
use regauth::config::encode_auth;
use regauth::config::keys::{DOCKER_HUB_KEY, auth_config_key, convert_to_hostname};
use regauth::reference::valid_domain;
use std::io::Read;

pub const EXAMPLES: &str = r#"Examples:
  # DOCKER_AUTH_CONFIG per job: the JSON for a GitLab CI/CD variable
  printf '%s\n' "$REGISTRY_PASSWORD" | regauth auth-config \
    --registry registry.example.com:5000 --username my_username --password-stdin

  # DOCKER_AUTH_CONFIG per runner: the escaped line for [[runners]] in config.toml
  printf '%s\n' "$REGISTRY_PASSWORD" | regauth auth-config \
    --registry registry.example.com:5000 --username my_username --password-stdin --toml

  # Two registries, one password line each
  printf '%s\n%s\n' "$PW_A" "$PW_B" | regauth auth-config --registry a.example.com \
    --registry b.example.com:5000 --username ci-a --username ci-b --password-stdin"#;

#[derive(Args, Debug)]
pub struct AuthConfigArgs {
    /// Registry host[:port] (repeatable). docker.io is written as https://index.docker.io/v1/.
    #[arg(long = "registry", value_name = "HOST[:PORT]", required = true)]
    pub registries: Vec<String>,
    /// Username: once for every registry, or once per --registry in the same order.
    #[arg(long = "username", value_name = "USER", required = true)]
    pub usernames: Vec<String>,
    /// Read the password(s) from stdin: one line for every registry, or one line per registry.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    /// Print the config.toml line `environment = ["DOCKER_AUTH_CONFIG=…"]` instead of the JSON.
    #[arg(long)]
    pub toml: bool,
}

pub fn run(a: AuthConfigArgs) -> anyhow::Result<i32> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading passwords from stdin")?;
    let passwords: Vec<&str> = input.lines().collect();
    let n = a.registries.len();
    if a.usernames.len() != 1 && a.usernames.len() != n {
        bail!(
            "give --username once, or once per --registry ({n} registries, {} usernames)",
            a.usernames.len()
        );
    }
    if passwords.len() != 1 && passwords.len() != n {
        bail!(
            "stdin must hold one password line, or one per --registry ({n} registries, {} lines)",
            passwords.len()
        );
    }
    let mut auths = serde_json::Map::new();
    for (i, reg) in a.registries.iter().enumerate() {
        let key = registry_key(reg)?;
        let user = &a.usernames[if a.usernames.len() == 1 { 0 } else { i }];
        if user.is_empty() || user.contains(':') {
            bail!("--username {user:?} for {reg}: must be non-empty and contain no ':'");
        }
        let pass = passwords[if passwords.len() == 1 { 0 } else { i }];
        if pass.is_empty() {
            bail!("empty password for {reg} on stdin");
        }
        auths.insert(key, serde_json::json!({ "auth": encode_auth(user, pass) }));
    }
    let json = serde_json::json!({ "auths": auths }).to_string();
    if a.toml {
        println!(
            "environment = [\"{}\"]",
            toml_escape(&format!("DOCKER_AUTH_CONFIG={json}"))
        );
    } else {
        println!("{json}");
    }
    Ok(0)
}

/// The `auths` key for a registry: Docker Hub as the docker CLI looks it up, others as host[:port].
fn registry_key(reg: &str) -> anyhow::Result<String> {
    let host = if reg.contains("://") {
        convert_to_hostname(reg)
    } else {
        reg.trim_end_matches('/').to_owned()
    };
    if host.contains('/') || !valid_domain(&host) {
        bail!("--registry {reg:?}: expected host[:port] such as registry.example.com:5000");
    }
    let key = auth_config_key(&host);
    Ok(if key == DOCKER_HUB_KEY { key } else { host })
}

/// A TOML basic string body: `\` and `"` escaped, control characters as `\uXXXX`.
fn toml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}
