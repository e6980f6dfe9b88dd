//! `regauth resolve`: one JSON object on stdout describing the credential that applies.

use super::ResolverArgs;
use anyhow::Context;
use clap::{ArgGroup, Args};
use regauth::reference::Target;
use regauth::resolve::Resolution;
use regauth::secret::REDACTED;
use serde_json::{Value, json};

pub const EXAMPLES: &str = r#"Examples:
  # DOCKER_AUTH_CONFIG per job (a GitLab CI/CD variable; a file-type variable's path works too)
  DOCKER_AUTH_CONFIG='{"auths":{"registry.example.com:5000":{"auth":"bXlfdXNlcm5hbWU6bXlfcGFzc3dvcmQ="}}}' \
    regauth resolve --profile gitlab --explain registry.example.com:5000/namespace/image:tag

  # DOCKER_AUTH_CONFIG per runner: check what the runner's config.toml value gives
  regauth resolve --profile gitlab registry.example.com:5000/private/image:latest

  # credsStore: one helper answers for every registry ({"credsStore": "file"})
  regauth resolve --config-dir /etc/regauth/docker --explain registry.example.com:5000

  # credHelpers / ECR: {"credHelpers": {"<account>.dkr.ecr.<region>.amazonaws.com": "ecr"}}
  regauth resolve --explain 123456789012.dkr.ecr.eu-west-1.amazonaws.com/private/image:latest

Exit status: 0 credentials apply, 1 none apply (the pull is anonymous), 2 error (with --explain
the steps up to the failure are printed first)."#;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).args(["target", "host", "image"])))]
pub struct ResolveArgs {
    #[command(flatten)]
    pub resolver: ResolverArgs,
    /// Print the secret itself instead of "<redacted>".
    #[arg(long)]
    pub show_secret: bool,
    /// Also print, on stderr, every source consulted and why it did or didn't match.
    #[arg(long)]
    pub explain: bool,
    /// An image reference (ruby:2.6, registry.example.com:5000/ns/img:tag) or a registry
    /// host[:port]. A single NAME:TAG is a Docker Hub image unless NAME is a domain by docker's rule
    /// (holds a '.', is 'localhost', or is an IP / [v6]): registry.example.com:5000 and
    /// localhost:5000 are hosts. Use --host or --image to decide it yourself.
    #[arg(value_name = "IMAGE_OR_HOST")]
    pub target: Option<String>,
    /// Resolve this registry host[:port] (or URL), never read as an image (e.g. myreg:5000).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub host: Option<String>,
    /// Resolve this image reference, never read as a host.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

impl ResolveArgs {
    /// The one target the group allows, parsed by the form the user chose.
    fn target(&self) -> anyhow::Result<Target> {
        let (raw, parsed) = match (&self.target, &self.host, &self.image) {
            (Some(t), _, _) => (t, Target::parse(t)),
            (_, Some(h), _) => (h, Target::host(h)),
            (_, _, Some(i)) => (i, Target::image(i)),
            (None, None, None) => anyhow::bail!("give an IMAGE_OR_HOST, --host or --image"),
        };
        parsed.with_context(|| format!("argument {raw:?}"))
    }
}

pub fn run(a: ResolveArgs) -> anyhow::Result<i32> {
    let target = a.target()?;
    let resolver = a.resolver.resolver();
    let (res, failure) = match resolver.resolve_explained(&target) {
        Ok(res) => (Some(res), None),
        Err(f) => (None, Some(f)),
    };
    let (trace, warnings) = match (&res, &failure) {
        (Some(r), _) => (&r.trace, &r.warnings),
        (_, Some(f)) => (&f.trace, &f.warnings),
        _ => unreachable!("one of the two is set"),
    };
    if !super::quiet() {
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
    if a.explain {
        for line in trace {
            eprintln!("explain: {line}");
        }
    }
    if let Some(f) = failure {
        if a.explain {
            eprintln!("explain: → failed (exit 2)");
        }
        return Err((*f.error).into());
    }
    let res = res.expect("set when there is no failure");
    println!("{}", to_json(&res, a.resolver.profile, a.show_secret));
    Ok(if res.credential.is_some() { 0 } else { 1 })
}

/// The output contract: `registry`, `source`, `kind`, `helper`, `username`, `secret` (plus
/// `profile`, `lookup`, `secret_kind`). With no credentials every one of the six is null.
pub fn to_json(res: &Resolution, profile: regauth::resolve::Profile, show_secret: bool) -> Value {
    let cred = res.credential.as_ref();
    json!({
        "profile": match profile { regauth::resolve::Profile::Docker => "docker", regauth::resolve::Profile::Gitlab => "gitlab" },
        "lookup": res.lookup,
        "registry": res.registry,
        "source": res.source,
        "kind": res.kind.map(|k| k.as_str()),
        "helper": res.helper,
        "username": cred.map(|c| c.username.clone()),
        "secret": cred.map(|c| if show_secret { c.secret.expose().to_owned() } else { REDACTED.to_owned() }),
        "secret_kind": cred.map(|c| c.secret_kind.as_str()),
    })
}
