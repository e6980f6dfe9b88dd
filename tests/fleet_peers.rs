//! Fleet mode, cross-node single-flight: several `regauth proxy` members (`--peer`, `--advertise`,
//! `--peer-secret-file`), each with its own cache and its own upstream credentials, in front of a
//! real CNCF registry (htpasswd) reached through a byte-counting TCP relay written here. Clients
//! are a hashing hyper GET (the bytes are never kept). The hostile owner is a small hyper server
//! posing as a peer.

mod common;
mod fleet_util;
mod proxy_util;

use bytes::Bytes;
use fleet_util::*;
use hyper_util::rt::TokioIo;
use proxy_util::{Proxy, curl_get};
use regauth::proxy::peer::rank;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// 30 concurrent cold pulls of one 64 MiB layer over three members: the upstream sends the layer
/// about once (≤ 1.05×), every client gets the right bytes; a fourth member started afterwards
/// serves it with no upstream blob bytes at all. Three independent proxies are measured for
/// comparison (printed only).
#[test]
fn three_members_fetch_a_layer_from_upstream_once_and_a_fourth_joins_warm() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let up = Upstream::start(None);
    let len: u64 = 64 << 20;
    let digest = up.push_random("fleet/big", len as usize);
    // Four members configured; the fourth is down for the first round.
    let addrs = addrs(4);
    let fleet: Vec<Proxy> = (0..3).map(|i| up.member(&addrs, i)).collect();
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs[..3]);
    assert_fleet_fetches_once(&up, &fleet, &addrs, &digest, len, "fleet of 3");
    let fetched: u64 = fleet
        .iter()
        .map(|p| p.metric("regauth_peer_fetches_total{outcome=\"ok\"}"))
        .sum();
    assert!(
        fetched >= 1,
        "no member fetched from a peer:\n{}",
        logs(&fleet)
    );
    for p in &fleet {
        let (ok, out) = p.cache_verify();
        assert!(ok, "cache verify: {out}");
        let (_, body) = proxy_util::curl(&["-s", &p.url("/healthz?verbose")]);
        assert!(
            body.contains(&format!("peer http://{} unhealthy", addrs[3])),
            "{body}"
        );
        assert!(!body.contains(SECRET) && !p.log_text().contains(SECRET));
    }

    // A fourth member, started afterwards: warm from the others, nothing from upstream.
    let fourth = up.member(&addrs, 3);
    let relayed = assert_joins_warm(&up, &fourth, &addrs, &digest);
    assert!(
        relayed > 0,
        "the fourth member served a peer's bytes without confirming the repository upstream"
    );

    // The baseline of three independent proxies is measured once, in tests/fleet.rs.
}

/// `kill -9` of the owner mid-download (the upstream throttled so there is a middle): every
/// client still completes with the right bytes — the killed member's clients through another
/// member, the others' through their member's fallback (resumed with a Range).
#[test]
fn killing_the_owner_mid_download_completes_every_client() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let up = Upstream::start(Some(8 << 20));
    let len: u64 = 32 << 20;
    let digest = up.push_random("fleet/kill", len as usize);
    let addrs = addrs(3);
    let mut fleet: Vec<Proxy> = (0..3).map(|i| up.member(&addrs, i)).collect();
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs);
    let (owner, results) =
        kill_owner_mid_download(&up, &mut fleet, &addrs, "fleet/kill", &digest, len);
    let logs = logs(&fleet);
    assert_all_ok(&results, &logs);
    for (i, p) in fleet.iter().enumerate() {
        if i == owner {
            continue;
        }
        let (ok, out) = p.cache_verify();
        assert!(ok, "cache verify: {out}");
    }
    let fallbacks: u64 = fleet
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(_, p)| p.metric("regauth_peer_fallbacks_total"))
        .sum();
    assert!(
        fallbacks >= 1,
        "no member fell back after the owner died:\n{logs}"
    );
}

fn hmac_header(secret: &str, path_and_query: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text = format!("regauth-peer-v1\nGET\n{path_and_query}\n{ts}");
    let tag = hmac::sign(&key, text.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1 {ts} {hex}")
}

/// The peer endpoint: no signature → 401, a wrong secret → 403, both before any upstream
/// traffic; a registry outside the member's allowlist → 403 even when signed right; a right
/// signature gets the blob (so the refusals are about the secret, not the request).
#[test]
fn the_peer_endpoint_needs_the_secret_and_stays_in_the_allowlist() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let up = Upstream::start(None);
    let relay = &up.relay;
    let digest = up.push_random("fleet/auth", 1 << 20);
    let addrs = addrs(2);
    let m = up.member(&addrs, 0);
    let registry = format!("127.0.0.1:{}", relay.port);
    let pq = format!("/_regauth/peer/v2/fleet/auth/blobs/{digest}?ns={registry}");
    let url = m.url(&pq);

    relay.bytes.store(0, Ordering::SeqCst);
    let (status, _, _) = curl_get(&url, &[]);
    assert_eq!(status, 401, "no signature");
    let wrong = hmac_header("another-secret-0123456789", &pq);
    let (status, _, _) = curl_get(&url, &["-H", &format!("x-regauth-peer: {wrong}")]);
    assert_eq!(status, 403, "wrong secret");
    let (status, _, _) = curl_get(&url, &["-H", "x-regauth-peer: v1 0 00"]);
    assert_eq!(status, 403, "stale signature");
    let evil = "/_regauth/peer/v2/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000?ns=evil.example.com";
    let signed = hmac_header(SECRET, evil);
    let (status, _, _) = curl_get(&m.url(evil), &["-H", &format!("x-regauth-peer: {signed}")]);
    assert_eq!(status, 403, "a registry outside the allowlist");
    assert_eq!(
        relay.bytes.load(Ordering::SeqCst),
        0,
        "refused requests reached upstream"
    );

    let good = hmac_header(SECRET, &pq);
    let (status, _, body) = curl_get(&url, &["-H", &format!("x-regauth-peer: {good}")]);
    assert_eq!(status, 200, "{}", m.log_text());
    assert_eq!(common::sha256_digest(&body), digest);
    assert_eq!(
        m.metric("regauth_peer_served_total{outcome=\"unauthorized\"}"),
        3
    );
    assert_eq!(
        m.metric("regauth_peer_served_total{outcome=\"refused\"}"),
        1
    );
    assert!(!m.log_text().contains(SECRET), "the secret is in the log");
}

/// A hostile owner (a server posing as a peer, flipping one byte): the member's client never
/// completes a wrong body, the member marks the peer failed and, on the client's retry, takes
/// the blob from upstream.
#[test]
fn a_lying_owner_never_completes_a_wrong_body() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let up = Upstream::start(None);
    let rt = &up.rt;
    let hostile_l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hostile = hostile_l.local_addr().unwrap().to_string();
    let me = format!("127.0.0.1:{}", common::free_port());
    let urls = [format!("http://{hostile}"), format!("http://{me}")];
    // A blob the hostile member owns.
    let (data, digest) = loop {
        let d = proxy_util::fault::random_bytes(4 << 20);
        let dg = common::sha256_digest(&d);
        let refs = [urls[0].as_str(), urls[1].as_str()];
        if rank(&refs, dg.trim_start_matches("sha256:"))[0] == 0 {
            break (d, dg);
        }
    };
    push_blob(&up.reg, "fleet/lie", &data);
    let asked = Arc::new(AtomicUsize::new(0));
    let (body, count) = (Bytes::from(data.clone()), asked.clone());
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = hostile_l.accept().await else {
                continue;
            };
            let (body, count) = (body.clone(), count.clone());
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (body, count) = (body.clone(), count.clone());
                    async move {
                        if req.uri().path() == "/healthz" {
                            return Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from_static(b"ok\n")),
                            ));
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        let mut v = body.to_vec();
                        let mid = v.len() / 2;
                        v[mid] ^= 0x01;
                        Ok(hyper::Response::new(http_body_util::Full::new(
                            Bytes::from(v),
                        )))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let m = up.member(&[hostile.clone(), me.clone()], 1);
    converge(&[&m], std::slice::from_ref(&hostile));
    let url = m.url(&format!("/v2/up/fleet/lie/blobs/{digest}"));
    let first = rt.block_on(hashed_get(&url));
    assert!(
        !first.whole() || first.digest == digest,
        "the client completed a wrong body: {first:?}"
    );
    assert!(
        asked.load(Ordering::SeqCst) >= 1,
        "the hostile owner was never asked"
    );
    let again = rt.block_on(pull(vec![url.clone()], digest.clone()));
    assert!(again.is_ok(), "{again:?}\n{}", m.log_text());
    assert!(m.metric("regauth_peer_fetches_total{outcome=\"bad_digest\"}") >= 1);
    let (ok, out) = m.cache_verify();
    assert!(ok, "cache verify: {out}");
}

/// A member whose own credentials cannot get a blob gets nothing from its peers, even when the
/// owner has the blob cached: the member confirms the repository upstream first.
#[test]
fn a_member_without_access_gets_nothing_from_its_peers() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let up = Upstream::start(None);
    let digest = up.push_random("fleet/private", 1 << 20);
    let addrs = addrs(2);
    let good = up.member(&addrs, 0);
    // The second member's credentials are wrong.
    let bad = up.member_with(&addrs, 1, "wrong", &[], &[]);
    converge(&[&good, &bad], &addrs);

    let path = format!("/v2/up/fleet/private/blobs/{digest}");
    let (status, _, body) = curl_get(&good.url(&path), &[]);
    assert_eq!(status, 200);
    assert_eq!(common::sha256_digest(&body), digest);
    let (status, _, body) = curl_get(&bad.url(&path), &[]);
    assert_ne!(status, 200, "{}", bad.log_text());
    assert_ne!(common::sha256_digest(&body), digest);
    assert_eq!(good.metric("regauth_peer_served_total{outcome=\"ok\"}"), 0);
}
