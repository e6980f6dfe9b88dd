//! Fleet mode, cross-node single-flight: several `regauth proxy` members (`--peer`, `--advertise`,
//! `--peer-secret-file`), each with its own cache and its own upstream credentials, in front of a
//! real CNCF registry (htpasswd) reached through a byte-counting TCP relay written here. Clients
//! are a hashing hyper GET (the bytes are never kept), or curl — as htpasswd users under an
//! `--access` file, or as an attacker replaying a signed peer request. The hostile owner is a
//! small hyper server posing as a peer.

mod common;
mod fleet_util;
mod proxy_util;

use bytes::Bytes;
use fleet_util::*;
use hyper_util::rt::TokioIo;
use proxy_util::{Proxy, curl_get};
use regauth::proxy::peer::{PeerKey, rank};
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

/// An `x-regauth-peer` value for a GET of `path_and_query` at member `to` (`host:port`), signed
/// with `secret` by the library's own signer (fresh time and nonce).
fn peer_header(secret: &str, to: &str, path_and_query: &str) -> String {
    let key = PeerKey::new(secret.as_bytes());
    let sig = key.sign(&hyper::Method::GET, &format!("http://{to}"), path_and_query);
    format!("x-regauth-peer: {}", sig.unwrap())
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
    let wrong = peer_header("another-secret-0123456789", &addrs[0], &pq);
    let (status, _, _) = curl_get(&url, &["-H", &wrong]);
    assert_eq!(status, 403, "wrong secret");
    let (status, _, _) = curl_get(&url, &["-H", "x-regauth-peer: v1 0 00"]);
    assert_eq!(status, 403, "stale signature");
    let evil = "/_regauth/peer/v2/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000?ns=evil.example.com";
    let signed = peer_header(SECRET, &addrs[0], evil);
    let (status, _, _) = curl_get(&m.url(evil), &["-H", &signed]);
    assert_eq!(status, 403, "a registry outside the allowlist");
    assert_eq!(
        relay.bytes.load(Ordering::SeqCst),
        0,
        "refused requests reached upstream"
    );

    let good = peer_header(SECRET, &addrs[0], &pq);
    let (status, _, body) = curl_get(&url, &["-H", &good]);
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

/// The first peer request in what a [`Relay`] saw: its path and query, and its `x-regauth-peer`
/// header line.
fn captured_peer_request(sent: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(sent);
    let start = text
        .find("GET /_regauth/peer/")
        .expect("no peer request captured");
    let head = &text[start
        ..text[start..]
            .find("\r\n\r\n")
            .map_or(text.len(), |e| start + e)];
    let pq = head.split(' ').nth(1).unwrap().to_owned();
    let header = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-regauth-peer:"))
        .expect("the peer request carried no signature");
    (pq, header.to_owned())
}

/// A real peer request, captured on the wire (a relay in front of the owner) and replayed with
/// curl: the owner served the member once, refuses the replay (403, `outcome="replayed"`); the
/// other member refuses it too (the receiver is under the signature); the same request freshly
/// signed for the owner is served — so the refusals are about the capture, not the request.
#[test]
fn a_captured_peer_request_replayed_is_refused_by_every_member() {
    if !common::require_peers(&["docker-registry", "curl"]) {
        return;
    }
    let up = Upstream::start(None);
    let owner_listen = format!("127.0.0.1:{}", common::free_port());
    let wire = relay(&up.rt, owner_listen.clone(), None);
    let addrs = vec![
        format!("127.0.0.1:{}", common::free_port()),
        format!("127.0.0.1:{}", wire.port),
    ];
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let (data, digest) = loop {
        let d = proxy_util::fault::random_bytes(256 << 10);
        let dg = common::sha256_digest(&d);
        if rank(&[&urls[0], &urls[1]], dg.trim_start_matches("sha256:"))[0] == 1 {
            break (d, dg);
        }
    };
    push_blob(&up.reg, "fleet/replay", &data);
    // The owner answers to the relay's address too (a loopback listener checks Host).
    let name = ["--server-name", &addrs[1]];
    let fleet = [
        up.member(&addrs, 0),
        up.member_at(&owner_listen, &addrs, 1, &name, &[]),
    ];
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs);
    let (a, owner) = (&fleet[0], &fleet[1]);

    let (status, _, body) = curl_get(&a.url(&format!("/v2/up/fleet/replay/blobs/{digest}")), &[]);
    assert_eq!(status, 200, "{}", logs(&fleet));
    assert_eq!(common::sha256_digest(&body), digest);
    assert_eq!(a.metric("regauth_peer_fetches_total{outcome=\"ok\"}"), 1);
    let (pq, captured) = captured_peer_request(&wire.sent.lock().unwrap());
    let (status, _, body) = curl_get(&owner.url(&pq), &["-H", &captured]);
    assert_eq!(status, 403, "the replay was served");
    assert_ne!(common::sha256_digest(&body), digest);
    assert_eq!(owner.metric("regauth_peer_served_total{outcome=\"ok\"}"), 1);
    assert_eq!(
        owner.metric("regauth_peer_served_total{outcome=\"replayed\"}"),
        1
    );
    let (status, _, _) = curl_get(&a.url(&pq), &["-H", &captured]);
    assert_eq!(status, 403, "another member served the capture");
    assert_eq!(
        a.metric("regauth_peer_served_total{outcome=\"unauthorized\"}"),
        1
    );
    let fresh = peer_header(SECRET, &addrs[1], &pq);
    let (status, _, body) = curl_get(&owner.url(&pq), &["-H", &fresh]);
    assert_eq!(status, 200, "a fresh signature:\n{}", owner.log_text());
    assert_eq!(common::sha256_digest(&body), digest);
    let logs = logs(&fleet);
    assert!(
        logs.contains("refused a peer request: a replayed signature"),
        "{logs}"
    );
    let mac = captured.rsplit(' ').next().unwrap();
    assert!(!logs.contains(SECRET) && !logs.contains(mac), "{logs}");
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

/// `--access` in a fleet: htpasswd user u1 may pull `team-a/*`, u2 only `team-b/*`. u1 pulls the
/// image through the member that does not own its layer (so the layer comes via the owner); then
/// u2 is refused the manifest and the layer at both members (403, as for an absent blob) although
/// both now hold them, and u1 is served by the owner too.
#[test]
fn access_rules_hold_at_every_member_of_a_fleet() {
    if !common::require_peers(&["docker-registry", "curl", "skopeo", "htpasswd"]) {
        return;
    }
    let up = Upstream::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let img = common::busybox_image_unique(&tmp.path().join("img"), "1.0", "fleet access");
    common::push_image(&img, &up.reg, "team-a/app:1.0", Some((USER, PASS)));
    let (u1, u2) = (("u1", "u1-pw-Fl33tA"), ("u2", "u2-pw-Fl33tB"));
    let htpasswd = proxy_util::htpasswd_file(tmp.path(), &[u1, u2]);
    let access = tmp.path().join("access.toml");
    let r = format!("127.0.0.1:{}", up.relay.port);
    std::fs::write(
        &access,
        format!(
            "[[access]]\nidentity = \"u1\"\nrepositories = [\"{r}/team-a/*\"]\n\n\
             [[access]]\nidentity = \"u2\"\nrepositories = [\"{r}/team-b/*\"]\n"
        ),
    )
    .unwrap();
    let addrs = addrs(2);
    let extra = [
        "--htpasswd",
        htpasswd.to_str().unwrap(),
        "--access",
        access.to_str().unwrap(),
    ];
    let fleet: Vec<Proxy> = (0..2)
        .map(|i| up.member_with(&addrs, i, PASS, &extra, &[]))
        .collect();
    converge(&fleet.iter().collect::<Vec<_>>(), &addrs);
    let layer = &img.layer_digests[0];
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let owner = rank(&[&urls[0], &urls[1]], layer.trim_start_matches("sha256:"))[0];
    let (a, b) = (&fleet[1 - owner], &fleet[owner]);
    let paths = [
        format!("/v2/up/team-a/app/blobs/{layer}"),
        "/v2/up/team-a/app/manifests/1.0".to_owned(),
    ];
    let get = |p: &Proxy, path: &str, who: (&str, &str)| {
        let auth = format!("{}:{}", who.0, who.1);
        let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
        curl_get(&p.url(path), &["-u", &auth, "-H", accept])
    };

    let (status, _, body) = get(a, &paths[0], u1);
    assert_eq!(status, 200, "{}", logs(&fleet));
    assert_eq!(&common::sha256_digest(&body), layer);
    assert_eq!(a.metric("regauth_peer_fetches_total{outcome=\"ok\"}"), 1);
    assert_eq!(get(a, &paths[1], u1).0, 200);
    let absent = format!("/v2/up/team-a/app/blobs/sha256:{}", "0".repeat(64));
    for p in [a, b] {
        let (status, _, absent_body) = get(p, &absent, u2);
        assert_eq!(status, 403, "u2, absent blob");
        for path in &paths {
            let (status, _, body) = get(p, path, u2);
            assert_eq!(status, 403, "u2 got {path}:\n{}", logs(&fleet));
            assert_eq!(
                body, absent_body,
                "a denied cached answer differs from absent"
            );
        }
    }
    for path in &paths {
        assert_eq!(get(b, path, u1).0, 200, "u1 on the owner: {path}");
    }
    for p in [a, b] {
        assert!(p.metric("regauth_access_denied_total{reason=\"access_rules\"}") >= 3);
        let text = p.log_text();
        assert!(!text.contains(u1.1) && !text.contains(u2.1) && !text.contains(SECRET));
    }
}
