//! `regauth cache ls|verify|gc`: inspect and maintain the proxy's cache folder.

use anyhow::Context;
use clap::{Args, Subcommand};
use regauth::config::locations::{Env, regauth_cache_dir};
use regauth::proxy::cache::{Cache, Limits, StoreConfig};
use regauth::proxy::policy::Policy;
use regauth::proxy::store::ContentStore;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

pub const EXAMPLES: &str = "Examples:
  # What the runner sidecar's proxy holds, as a table or as JSON lines
  regauth cache ls
  regauth cache ls --json | jq -r 'select(.kind==\"manifest\") | .digest'

  # Re-hash everything; delete (and list) what does not match its digest
  regauth cache verify --repair

  # A nightly timer: show, then apply, a 20G / 14-day bound
  regauth cache gc --max-size 20G --max-age 14d --dry-run
  regauth cache gc --max-size 20G --max-age 14d

  # A fleet's bucket (the AWS environment configures the client)
  regauth cache --store s3://ci-cache/regauth verify

Exit status: 0 ok, 1 cache verify found bad entries, 2 error (no such cache folder, …).";

/// Inspect and maintain the proxy cache (safe to run while the proxy runs).
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Cache folder (default: $XDG_CACHE_HOME/regauth or ~/.cache/regauth).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The bucket of a fleet (`regauth proxy --store`): s3://BUCKET[/PREFIX], from the AWS
    /// environment. ls, verify and gc then read the bucket (verify downloads every object).
    #[arg(long, global = true, value_name = "URL", value_parser = super::proxy::parse_store)]
    pub store: Option<regauth::proxy::store::object::StoreUrl>,
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// List cached manifests and blobs (kind, digest, size, age) and tag entries.
    #[command(
        after_help = "Examples:\n  regauth cache ls\n  regauth cache --cache-dir /var/cache/regauth ls --json"
    )]
    Ls {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every entry; exit 1 if any does not match its digest (bad entries are reported,
    /// and removed with --repair).
    #[command(
        after_help = "Examples:\n  regauth cache verify\n  regauth cache verify --repair   # lists every entry it removes"
    )]
    Verify {
        /// Delete entries that fail verification.
        #[arg(long)]
        repair: bool,
    },
    /// Remove stale temp files, then entries unused for --max-age, then least recently used
    /// entries until the cache is at most --max-size.
    #[command(
        after_help = "Examples:\n  regauth cache gc --max-size 20G --max-age 14d --dry-run   # lists what would go\n  regauth cache gc --max-size 20G --max-age 14d"
    )]
    Gc {
        /// Size bound, e.g. 500M, 20G, 1048576 (bytes).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
        /// Age bound for unused entries, e.g. 7d, 12h, 30m, 3600 (seconds).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        max_age: Option<Duration>,
        /// Show what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
        /// Keep the digests this policy file pins (as the proxy's live bound does).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
}

/// `500M`, `20G`, `1048576`: also `regauth proxy --cache-max-size`.
/// `4194304`, `500M`, `4MiB`, `512K`, `20G`, `1T` (K/M/G/T are binary; `KB`, `KiB` alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500M, 4MiB or 20G"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1u64),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| Duration::from_secs(n.saturating_mul(mult)))
        .map_err(|_| format!("{s:?} is not an age like 7d, 12h or 30m"))
}

pub fn run(a: CacheArgs) -> anyhow::Result<i32> {
    let dir = match a.cache_dir {
        Some(d) => d,
        None => regauth_cache_dir(&Env::from_process())
            .context("no --cache-dir and neither XDG_CACHE_HOME nor HOME is set")?,
    };
    let cache = match a.store {
        Some(url) => Cache::existing_with_store(&dir, StoreConfig::new(url))?,
        None => Cache::existing(&dir)?,
    };
    // The cache's store seam is async (an object store will be); one small runtime drives it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(act(&cache, a.action))
}

async fn act(cache: &Cache, action: CacheAction) -> anyhow::Result<i32> {
    match action {
        CacheAction::Ls { json } => ls(cache, json).await,
        CacheAction::Verify { repair } => verify(cache, repair).await,
        CacheAction::Gc {
            max_size,
            max_age,
            dry_run,
            policy,
        } => {
            let mut limits = Limits::default();
            if let Some(p) = policy {
                let pol = Policy::load(&p)?;
                limits.keep.extend(pol.pinned_digests());
            }
            let cache = cache.clone().with_limits(limits);
            let r = cache.gc(max_size, max_age, dry_run).await?;
            for e in &r.entries {
                println!(
                    "{} {:<8} {} {:>9}",
                    if dry_run { "would remove" } else { "removed" },
                    e.kind.as_str(),
                    e.digest,
                    human_size(e.size)
                );
            }
            println!(
                "{}removed {} files ({}); {} kept",
                if dry_run { "would have " } else { "" },
                r.removed,
                human_size(r.freed),
                human_size(r.kept_bytes)
            );
            Ok(0)
        }
    }
}

/// `1536` → `1.5 KiB`: binary units, as `du -h` and docker's sizes.
pub fn human_size(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn ls(cache: &Cache, json: bool) -> anyhow::Result<i32> {
    let entries = cache.list().await?;
    let tags = cache.tags().await;
    let now = std::time::SystemTime::now();
    // The cache knows repository and tag names for manifests through its tag entries.
    let names_of = |digest: &str| -> Vec<String> {
        tags.iter()
            .filter(|t| t.digest == digest)
            .map(|t| format!("{}/{}:{}", t.upstream, t.repo, t.tag))
            .collect()
    };
    if json {
        for e in &entries {
            let age = now
                .duration_since(e.accessed)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            println!(
                "{}",
                serde_json::json!({"kind": e.kind.as_str(), "digest": e.digest, "size": e.size,
                    "age_secs": age, "names": names_of(&e.digest)})
            );
        }
        for t in &tags {
            println!(
                "{}",
                serde_json::json!({"kind": "tag", "upstream": t.upstream, "repo": t.repo, "tag": t.tag, "digest": t.digest, "checked_at": t.checked_at})
            );
        }
        return Ok(0);
    }
    println!(
        "{:<8}  {:<71}  {:>10}  {:>5}  NAMES",
        "KIND", "DIGEST", "SIZE", "AGE"
    );
    for e in &entries {
        let age = now
            .duration_since(e.accessed)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let names = names_of(&e.digest);
        println!(
            "{:<8}  {:<71}  {:>10}  {:>5}  {}",
            e.kind.as_str(),
            e.digest,
            human_size(e.size),
            human_age(age),
            if names.is_empty() {
                "-".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    for t in &tags {
        let age = crate_now().saturating_sub(t.checked_at);
        println!(
            "{:<8}  {:<71}  {:>10}  {:>5}  {}/{}:{}",
            "tag",
            t.digest,
            "-",
            human_age(age),
            t.upstream,
            t.repo,
            t.tag
        );
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    eprintln!(
        "{} entries, {}; {} tags",
        entries.len(),
        human_size(total),
        tags.len()
    );
    Ok(0)
}

fn crate_now() -> u64 {
    regauth::proxy::cache::now_secs()
}

async fn verify(cache: &Cache, repair: bool) -> anyhow::Result<i32> {
    let entries = cache.list().await?;
    let tty = std::io::stderr().is_terminal() && !super::quiet();
    let mut bad = 0usize;
    let mut removed = 0usize;
    for (i, e) in entries.iter().enumerate() {
        if tty {
            eprint!(
                "\rverifying {}/{} {}",
                i + 1,
                entries.len(),
                &e.digest[..19.min(e.digest.len())]
            );
            let _ = std::io::stderr().flush();
        }
        if let Err(why) = cache.verify_entry(e).await {
            bad += 1;
            if tty {
                eprintln!();
            }
            println!("BAD {} {}: {why}", e.kind.as_str(), e.digest);
            if repair && let Some(hex) = e.digest.strip_prefix("sha256:") {
                match cache.store().remove(e.kind, hex).await {
                    Ok(_) => {
                        removed += 1;
                        println!("removed {} {}", e.kind.as_str(), e.digest);
                    }
                    Err(err) => {
                        println!("could not remove {} {}: {err}", e.kind.as_str(), e.digest)
                    }
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    if repair {
        println!(
            "{} entries verified, {bad} bad, {removed} removed",
            entries.len()
        );
    } else {
        println!("{} entries verified, {bad} bad", entries.len());
    }
    Ok(if bad == 0 { 0 } else { 1 })
}
