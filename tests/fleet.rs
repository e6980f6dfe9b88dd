//! Fleet mode, both halves together: members on ONE bucket (`--store s3://…`, moto's S3 API,
//! `common::S3Server`) that also know each other (`--peer` ×N, `--advertise`,
//! `--peer-secret-file`), each with its own docker config (its own upstream credentials), in
//! front of a real CNCF registry (htpasswd) reached through the byte-counting relay of
//! `fleet_util` — which can also flip a byte. `FlakyS3` (503s and stalls) stands in for a bucket
//! under load, a fault a healthy local server cannot produce.

mod common;
mod fleet_util;
mod proxy_util;

use common::S3Server;
use fleet_util::*;
use object_store::ObjectStoreExt;
use proxy_util::Proxy;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `n` fleet members of `addrs` in front of `up` on the bucket `store`, the AWS environment `env`.
fn fleet_on(
    addrs: &[String],
    n: usize,
    up: &Upstream,
    store: &str,
    env: &[(&'static str, String)],
) -> Vec<Proxy> {
    (0..n)
        .map(|i| {
            let extra = ["--store", store];
            up.member_with(addrs, i, PASS, &extra, env)
        })
        .collect()
}

/// Three members on one bucket: 30 concurrent cold pulls of a 64 MiB layer take it from upstream
/// about once (≤ 1.05×) and every client gets the right bytes; the bucket verifies clean; a
/// fourth member started afterwards serves it with 0 upstream blob bytes. Three proxies sharing
/// nothing are measured for comparison (printed only).
#[test]
fn three_members_on_one_bucket_fetch_a_layer_once_and_a_fourth_joins_warm() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let s3 = S3Server::start("fleet");
    let store = s3.url("ci");
    let up = Upstream::start(None);
    let len: u64 = 64 << 20;
    let digest = up.push_random("fleet/big", len as usize);
    let addrs = addrs(4);
    let fleet = fleet_on(&addrs, 3, &up, &store, &s3.env());
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs[..3]);
    assert_fleet_fetches_once(
        &up,
        &fleet,
        &addrs,
        &digest,
        len,
        "fleet of 3 on one bucket",
    );
    // The commit runs behind the clients: wait for the layer to land in the bucket.
    wait_committed(&store, &s3.env(), &[&digest], || logs(&fleet));
    assert!(
        bucket_entries(&store, &s3.env())
            .iter()
            .any(|(d, n)| *d == digest && *n == len)
    );
    eprintln!("{}", assert_verify_clean(&store, &s3.env()));

    // A fourth member, started afterwards on the same bucket: no blob bytes from upstream.
    let fourth = up.member_with(&addrs, 3, PASS, &["--store", &store], &s3.env());
    assert_joins_warm(&up, &fourth, &addrs, &digest);

    // For the closing note: three proxies sharing nothing (no bucket, no peers).
    drop(fourth);
    drop(fleet);
    independent_baseline(&up, &digest, len);
}

/// `kill -9` of the owner mid-download (upstream throttled so there is a middle), members on one
/// bucket: every client completes with the right bytes, the bucket verifies clean and holds the
/// layer. Then an upload claim left by a member that died mid-upload (planted as it would be):
/// the next cold pull of that blob still completes while the claim stands (the commit waits it
/// out behind the clients), and once it expires the blob is committed.
#[test]
fn killing_the_owner_on_a_shared_bucket_completes_every_client_and_leaves_it_clean() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let s3 = S3Server::start("kill");
    let store = s3.url("k");
    let up = Upstream::start(Some(8 << 20));
    let rt = &up.rt;
    let len: u64 = 32 << 20;
    let digest = up.push_random("fleet/kill", len as usize);
    let addrs = addrs(3);
    let mut fleet = fleet_on(&addrs, 3, &up, &store, &s3.env());
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs);
    let (owner, results) =
        kill_owner_mid_download(&up, &mut fleet, &addrs, "fleet/kill", &digest, len);
    assert_all_ok(&results, &logs(&fleet));
    wait_committed(&store, &s3.env(), &[&digest], || logs(&fleet));
    eprintln!("after the kill: {}", assert_verify_clean(&store, &s3.env()));

    // A claim on a large blob's upload, left by a member killed mid-upload.
    let stuck = up.push_random("fleet/kill", 20 << 20);
    let claim = object_store::path::Path::from(format!(
        "k/uploads/{}.claim",
        stuck.trim_start_matches("sha256:")
    ));
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    let body = format!("{{\"holder\":\"dead\",\"expires_ms\":{expires}}}");
    let os = bucket_client(&s3, &s3.bucket);
    rt.block_on(os.put(&claim, body.into_bytes().into()))
        .unwrap();
    let alive: Vec<String> = (0..3)
        .filter(|i| *i != owner)
        .map(|i| addrs[i].clone())
        .collect();
    let r = pull_many(rt, &alive, "fleet/kill", &stuck, 2);
    assert_all_ok(&r, &logs(&fleet));
    // The clients had their verified bytes while the claim still stood and before any commit:
    // the commit waits it out (up to its 10-minute TTL) behind them.
    assert!(
        rt.block_on(os.head(&claim)).is_ok(),
        "the planted claim is gone:\n{}",
        logs(&fleet)
    );
    assert!(
        !bucket_entries(&store, &s3.env())
            .iter()
            .any(|(e, _)| *e == stuck),
        "committed despite another member's claim"
    );
    // The dead member's claim runs out (its holder never renews it): the waiting commits take
    // over and the blob lands in the bucket.
    let dead = r#"{"holder":"dead","expires_ms":0}"#;
    rt.block_on(os.put(&claim, dead.as_bytes().to_vec().into()))
        .unwrap();
    wait_committed(&store, &s3.env(), &[&stuck], || logs(&fleet));
    eprintln!("{}", assert_verify_clean(&store, &s3.env()));
}

/// A flipped byte from upstream with the fleet on one bucket: no client completes a wrong body
/// and nothing is committed; once upstream is honest again, the same pulls succeed and commit.
#[test]
fn a_flipped_byte_upstream_commits_nothing_to_the_fleets_bucket() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let s3 = S3Server::start("flip");
    let store = s3.url("f");
    let up = Upstream::start(None);
    let (rt, relay) = (&up.rt, &up.relay);
    let digest = up.push_random("fleet/flip", 4 << 20);
    let addrs = addrs(3);
    let fleet = fleet_on(&addrs, 3, &up, &store, &s3.env());
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs);
    relay.flip.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..6)
        .map(|c| {
            let url = format!("http://{}/v2/up/fleet/flip/blobs/{digest}", addrs[c % 3]);
            rt.spawn(async move { hashed_get(&url).await })
        })
        .collect();
    for t in tasks {
        let got = rt.block_on(t).unwrap();
        assert!(
            !got.whole(),
            "a client completed a body of a flipped upstream: {got:?}\n{}",
            logs(&fleet)
        );
    }
    let failures: u64 = fleet
        .iter()
        .map(|p| p.metric("regauth_verification_failures_total"))
        .sum();
    assert!(failures >= 1, "{}", logs(&fleet));
    let in_bucket = bucket_entries(&store, &s3.env());
    assert!(
        !in_bucket.iter().any(|(d, _)| *d == digest),
        "a blob that failed its digest is in the bucket: {in_bucket:?}"
    );
    assert_verify_clean(&store, &s3.env());

    relay.flip.store(false, Ordering::SeqCst);
    let r = pull_many(rt, &addrs, "fleet/flip", &digest, 6);
    assert_all_ok(&r, &logs(&fleet));
    wait_committed(&store, &s3.env(), &[&digest], || logs(&fleet));
    assert_verify_clean(&store, &s3.env());
}

/// The fleet's bucket answers 503 to every 4th request and stalls every 5th: 12 concurrent pulls
/// of a 20 MiB layer (multipart) and a 1 MiB one over three members all succeed, both land in the
/// bucket despite the 503s, and the bucket verifies.
#[test]
fn a_flaky_bucket_never_fails_a_fleet_pull() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let s3 = S3Server::start("flaky");
    let store = s3.url("x");
    let up = Upstream::start(None);
    let rt = &up.rt;
    let (flaky, s3relay) =
        proxy_util::fault::start_flaky_s3(rt, &s3.moto.addr, 4, 5, Duration::from_millis(300));
    let env = s3.env_for(&format!("http://{s3relay}"));
    let addrs = addrs(3);
    let fleet = fleet_on(&addrs, 3, &up, &store, &env);
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs);
    let mut digests = Vec::new();
    for (size, n) in [(20usize << 20, 12), (1 << 20, 6)] {
        let digest = up.push_random("fleet/flaky", size);
        digests.push(digest.clone());
        let r = pull_many(rt, &addrs, "fleet/flaky", &digest, n);
        assert_all_ok(&r, &logs(&fleet));
        // Warm now (bucket or a member's flight): again, every member.
        let r = pull_many(rt, &addrs, "fleet/flaky", &digest, 3);
        assert_all_ok(&r, &logs(&fleet));
    }
    let all: Vec<&str> = digests.iter().map(String::as_str).collect();
    wait_committed(&store, &s3.env(), &all, || logs(&fleet));
    assert!(
        flaky.failed.load(Ordering::SeqCst) > 0,
        "the relay failed nothing"
    );
    eprintln!(
        "flaky bucket: {} requests, {} answered 503",
        flaky.requests.load(Ordering::SeqCst),
        flaky.failed.load(Ordering::SeqCst)
    );
    assert_verify_clean(&store, &s3.env());
}
