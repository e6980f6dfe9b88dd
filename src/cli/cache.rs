//! `regauth cache ls|verify|gc`: inspect and maintain the proxy's cache folder.

use anyhow::Context;
use clap::{Args, Subcommand};
use regauth::config::locations::{Env, regauth_cache_dir};
use regauth::proxy::cache::Cache;
use regauth::proxy::store::ContentStore;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Inspect and maintain the proxy cache (safe to run while the proxy runs).
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Cache folder (default: $XDG_CACHE_HOME/regauth or ~/.cache/regauth).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// List cached manifests and blobs (kind, digest, size, age) and tag entries.
    Ls {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every entry; exit 1 if any does not match its digest (bad entries are reported,
    /// and removed with --repair).
    Verify {
        /// Delete entries that fail verification.
        #[arg(long)]
        repair: bool,
    },
    /// Remove stale temp files, then entries unused for --max-age, then least recently used
    /// entries until the cache is at most --max-size.
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
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n.saturating_mul(mult))
        .map_err(|_| format!("{s:?} is not a size like 500M or 20G"))
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
    let cache = Cache::existing(&dir)?;
    // The cache's store seam is async (an object store will be); one small runtime drives it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(act(&cache, a.action))
}

async fn act(cache: &Cache, action: CacheAction) -> anyhow::Result<i32> {
    match action {
        CacheAction::Ls { json } => {
            let entries = cache.list().await?;
            let now = std::time::SystemTime::now();
            for e in &entries {
                let age = now
                    .duration_since(e.accessed)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"kind": e.kind.as_str(), "digest": e.digest, "size": e.size, "age_secs": age})
                    );
                } else {
                    println!(
                        "{:<8} {} {:>12} {:>8}s",
                        e.kind.as_str(),
                        e.digest,
                        e.size,
                        age
                    );
                }
            }
            for t in cache.tags() {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"kind": "tag", "upstream": t.upstream, "repo": t.repo, "tag": t.tag, "digest": t.digest, "checked_at": t.checked_at})
                    );
                } else {
                    println!(
                        "tag      {}/{}:{} -> {}",
                        t.upstream, t.repo, t.tag, t.digest
                    );
                }
            }
            if !json {
                let total: u64 = entries.iter().map(|e| e.size).sum();
                eprintln!("{} entries, {total} bytes", entries.len());
            }
            Ok(0)
        }
        CacheAction::Verify { repair } => {
            let entries = cache.list().await?;
            let tty = std::io::stderr().is_terminal();
            let mut bad = 0usize;
            for (i, e) in entries.iter().enumerate() {
                if tty {
                    eprint!(
                        "\rverifying {}/{} {}",
                        i + 1,
                        entries.len(),
                        &e.digest[..19]
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
                        let _ = cache.store().remove(e.kind, hex).await;
                    }
                }
            }
            if tty {
                eprintln!();
            }
            println!("{} entries verified, {bad} bad", entries.len());
            Ok(if bad == 0 { 0 } else { 1 })
        }
        CacheAction::Gc {
            max_size,
            max_age,
            dry_run,
        } => {
            let r = cache.gc(max_size, max_age, dry_run).await?;
            println!(
                "{}removed {} files ({} bytes); {} bytes kept",
                if dry_run { "would have " } else { "" },
                r.removed,
                r.freed,
                r.kept_bytes
            );
            Ok(0)
        }
    }
}
