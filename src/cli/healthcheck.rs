//! `regauth healthcheck [URL]`: probe a running proxy's `/healthz` and exit 0 only on `200`.
//!
//! Owns: the container HEALTHCHECK probe (a `FROM scratch` image has no curl or wget). Does not
//! own the endpoint itself (that is `regauth proxy`). Plain HTTP only, no redirects followed, no
//! credentials sent: it is a liveness probe for a loopback or in-container address.

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub const EXAMPLES: &str = r#"Examples:
  # A runner sidecar's container HEALTHCHECK (the image has no curl)
  HEALTHCHECK CMD ["regauth", "healthcheck", "--quiet"]

  # A proxy on another port, from a script
  regauth healthcheck http://127.0.0.1:5001/healthz || systemctl restart regauth-proxy

Exit status: 0 healthy (200 from /healthz), 1 not (no answer, other status, timeout), 2 bad URL."#;

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// URL to probe. Only http:// is supported.
    #[arg(
        value_name = "URL",
        env = "REGAUTH_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:5000/healthz"
    )]
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
}

pub fn run(a: HealthcheckArgs) -> anyhow::Result<i32> {
    let uri: hyper::Uri = a
        .url
        .parse()
        .with_context(|| format!("URL {:?} is not a valid URI", a.url))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        bail!("URL {:?}: expected http://HOST[:PORT]/PATH", a.url);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        tokio::time::timeout(Duration::from_secs(a.timeout), async {
            let resp = client.get(uri.clone()).await?;
            let status = resp.status();
            // Drain a small body so the connection closes cleanly; the content is informative only.
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        })
        .await
    });
    match outcome {
        Ok(Ok((status, body))) if status == hyper::StatusCode::OK => {
            if !super::quiet() {
                let text = String::from_utf8_lossy(&body);
                let first: String = text.lines().next().unwrap_or("").chars().take(80).collect();
                println!("healthy: {} {}", a.url, first.trim());
            }
            Ok(0)
        }
        Ok(Ok((status, _))) => {
            if !super::quiet() {
                eprintln!("unhealthy: {} answered {status}", a.url);
            }
            Ok(1)
        }
        Ok(Err(e)) => {
            if !super::quiet() {
                eprintln!("unhealthy: {}: {e:#}", a.url);
            }
            Ok(1)
        }
        Err(_) => {
            if !super::quiet() {
                eprintln!("unhealthy: {}: no answer within {}s", a.url, a.timeout);
            }
            Ok(1)
        }
    }
}
