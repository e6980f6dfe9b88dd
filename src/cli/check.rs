//! `regauth check`: findings on stdout, one per line (or JSON), exit 1 when any is an error.

use super::ResolverArgs;
use clap::Args;
use regauth::check::{Level, check};

pub const EXAMPLES: &str = r#"Examples:
  # The runner host as GitLab Runner reads it (DOCKER_AUTH_CONFIG, then ~/.docker/config.json)
  regauth check --profile gitlab --image registry.example.com:5000/private/image:latest

  # A per-job DOCKER_AUTH_CONFIG value before pasting it into GitLab
  DOCKER_AUTH_CONFIG='{"auths":{"registry.example.com:5000":{"auth":"bXlfdXNlcm5hbWU6bXlfcGFzc3dvcmQ="}}}' \
    regauth check --profile gitlab

  # A credsStore/credHelpers config.json (helpers on PATH? keys that never match?), as JSON
  regauth check --config-dir /etc/regauth/docker --json

Exit status: 0 no errors (warnings may be printed), 1 at least one error, 2 bad arguments."#;

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub resolver: ResolverArgs,
    /// Also check how this image would resolve (repeatable); reports host:port mismatches. Always
    /// an image: ruby:2.6 is docker.io/library/ruby.
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,
    /// Also check how this registry host[:port] would resolve (repeatable); never read as an image.
    #[arg(long = "host", value_name = "HOST[:PORT]")]
    pub hosts: Vec<String>,
    /// Print findings as a JSON array.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CheckArgs) -> anyhow::Result<i32> {
    let findings = check(&a.resolver.resolver(), &a.images, &a.hosts);
    if a.json {
        let v: Vec<_> = findings
            .iter()
            .map(|f| serde_json::json!({"level": f.level.as_str(), "source": f.source, "field": f.field, "message": f.message}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else if findings.is_empty() {
        println!("ok: no findings");
    } else {
        for f in &findings {
            let mut loc = f.source.clone();
            if !f.field.is_empty() {
                if !loc.is_empty() {
                    loc.push_str(": ");
                }
                loc.push_str(&f.field);
            }
            if loc.is_empty() {
                println!("{}: {}", f.level.as_str(), f.message);
            } else {
                println!("{}: {loc}: {}", f.level.as_str(), f.message);
            }
        }
    }
    Ok(if findings.iter().any(|f| f.level == Level::Error) {
        1
    } else {
        0
    })
}
