//! Registry key normalisation: the string functions the docker CLI and GitLab Runner apply to
//! config keys and image names before they compare them.
//!
//! Owns: [`convert_to_hostname`] (docker/cli `credentials.ConvertToHostname`), regauth's own
//! comparison key for a server URL ([`registry_host`], with the one Docker Hub folding
//! [`is_docker_hub`]), the one `host[:port]` splitter ([`split_host_port`] / [`host_name`]),
//! [`auth_config_key`]
//! (docker/cli `getAuthConfigKey`), [`registry_path`] (GitLab Runner `convertToRegistryPath`) and
//! [`gitlab_image_path`] (GitLab Runner's image-name normalisation), each reproducing its anchor's
//! quirks, FIXMEs included — being "right" where the anchor is not would give a different answer
//! than the tool the user runs.
//!
//! Does not own: image-reference validation (see [`crate::reference`]).

/// Docker Hub's key in `auths`/`credHelpers`, as the docker CLI writes and looks it up.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// Docker Hub's registry domain in references.
pub const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain.
pub const DOCKER_HUB_LEGACY_DOMAIN: &str = "index.docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// docker/cli `ConvertToHostname`: a URL becomes `host[:port]`; anything else is cut at the first
/// `/`. Case is kept.
pub fn convert_to_hostname(maybe_url: &str) -> String {
    if let Some(idx) = maybe_url.find("://")
        && let Some(h) = url_host_port(&maybe_url[idx + 3..])
    {
        return h;
    }
    maybe_url.split('/').next().unwrap_or("").to_owned()
}

/// True for every spelling of Docker Hub's registry host (`docker.io`, `index.docker.io`,
/// `registry-1.docker.io`, any case). The one place regauth folds Docker Hub for its own
/// comparisons; the anchors' own, narrower rules (docker's `index.docker.io` → `docker.io` in
/// references, GitLab's in [`registry_path`]) stay where they are reproduced.
pub fn is_docker_hub(host: &str) -> bool {
    [
        DOCKER_HUB_DOMAIN,
        DOCKER_HUB_LEGACY_DOMAIN,
        DOCKER_HUB_API_HOST,
    ]
    .iter()
    .any(|h| host.eq_ignore_ascii_case(h))
}

/// The registry `host[:port]` a server URL names, as every regauth backend and the proxy compare
/// it: docker's `ConvertToHostname` (a URL keeps only `host[:port]`, anything else is cut at the
/// first `/`), lower-cased (DNS names are case-insensitive), and every Docker Hub spelling
/// ([`is_docker_hub`], also `https://index.docker.io/v1/`) folded to `docker.io`. The port is kept:
/// `reg:5000` and `reg` are different registries.
pub fn registry_host(server_url: &str) -> String {
    let host = convert_to_hostname(server_url.trim()).to_ascii_lowercase();
    if is_docker_hub(&host) {
        DOCKER_HUB_DOMAIN.to_owned()
    } else {
        host
    }
}

/// Splits an authority `[user@]host[:port]` or `[user@][v6][:port]` into the host (brackets
/// removed) and the port, as Go's `url.URL.Hostname()` / `Port()` read it. An unbracketed host
/// with more than one `:` has no port. The port is returned as written (callers that need digits
/// check them).
pub fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = a.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (a, None),
    }
}

/// The host of an authority without port, brackets or user info ([`split_host_port`]).
pub fn host_name(authority: &str) -> &str {
    split_host_port(authority).0
}

/// The `host[:port]` of a URL's authority, as Go's `url.Parse` + `net.JoinHostPort` give it;
/// `None` where Go's parser fails or finds no host.
fn url_host_port(after_scheme: &str) -> Option<String> {
    let end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail {
            "" => "",
            t => t.strip_prefix(':')?,
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (hostport, ""),
        }
    };
    if !port.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if host.is_empty() {
        return None;
    }
    Some(if port.is_empty() {
        host.to_owned()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// docker/cli `getAuthConfigKey`: the key under which credentials for a registry domain are looked
/// up. Only Docker Hub is rewritten.
pub fn auth_config_key(domain: &str) -> String {
    if domain == DOCKER_HUB_DOMAIN || domain == DOCKER_HUB_LEGACY_DOMAIN {
        DOCKER_HUB_KEY.to_owned()
    } else {
        domain.to_owned()
    }
}

/// Lower-cases the first path segment (the host) and keeps the rest.
fn lower_host(path: &str) -> String {
    match path.split_once('/') {
        Some((h, rest)) => format!("{}/{rest}", h.to_lowercase()),
        None => path.to_lowercase(),
    }
}

/// GitLab Runner `convertToRegistryPath`: a credential key becomes the registry path it applies to.
/// `http(s)://` keys keep only the (lower-cased) host, with `index.docker.io` → `docker.io`; other
/// keys lose a trailing `/` and a `:tag` in the last segment, and only their host is lower-cased.
pub fn registry_path(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("https://") {
        Some(8)
    } else if lower.starts_with("http://") {
        Some(7)
    } else {
        None
    };
    if let Some(n) = scheme_len {
        let host = key[n..].split('/').next().unwrap_or("").to_lowercase();
        return if host == DOCKER_HUB_LEGACY_DOMAIN {
            DOCKER_HUB_DOMAIN.to_owned()
        } else {
            host
        };
    }
    let mut path = key.strip_suffix('/').unwrap_or(key);
    if let (Some(tag), Some(slash)) = (path.rfind(':'), path.rfind('/'))
        && tag > slash
    {
        path = &path[..tag];
    }
    lower_host(path)
}

/// GitLab Runner's image-name normalisation: the tag is cut (at the first `:` of the last segment,
/// so `name@sha256:…` leaves `name@sha256`), a first segment without `.` or `:` that is not
/// `localhost` (any case) means Docker Hub, `index.docker.io` becomes `docker.io`, and the host is
/// lower-cased.
pub fn gitlab_image_path(image: &str) -> String {
    let (dir, last) = match image.rfind('/') {
        Some(i) => (&image[..=i], &image[i + 1..]),
        None => ("", image),
    };
    let last = last.split(':').next().unwrap_or("");
    let path = format!("{dir}{last}");
    let first = image.split('/').next().unwrap_or("");
    let has_host = image.contains('/')
        && (first.contains('.') || first.contains(':') || first.eq_ignore_ascii_case("localhost"));
    let path = if !has_host {
        format!("{DOCKER_HUB_DOMAIN}/{path}")
    } else if first.eq_ignore_ascii_case(DOCKER_HUB_LEGACY_DOMAIN) {
        format!("{DOCKER_HUB_DOMAIN}{}", &path[first.len()..])
    } else {
        path
    };
    lower_host(&path)
}

/// The parent of a registry path (`a/b/c` → `a/b`), `None` at the host.
pub fn parent_path(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docker/cli `TestConvertToHostname`, FIXMEs included.
    #[test]
    fn convert_to_hostname_table() {
        let table = [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "[::1]"),
            ("example.com", "example.com"),
            ("http://example.com", "example.com"),
            ("https://example.com", "example.com"),
            ("https://example.com/", "example.com"),
            ("https://example.com/v2/", "example.com"),
            ("unix:///var/run/docker.sock", "unix:"),
            ("ftp://example.com", "example.com"),
            ("127.0.0.1:6556", "127.0.0.1:6556"),
            ("::1:6556", "::1:6556"),
            ("[::1]:6556", "[::1]:6556"),
            ("example.com:6555", "example.com:6555"),
            ("https://127.0.0.1:6555/v2/", "127.0.0.1:6555"),
            ("https://::1:6555/v2/", "[::1]:6555"),
            ("https://[::1]:6555/v2/", "[::1]:6555"),
            ("http://example.com:6555", "example.com:6555"),
            ("https://example.com:6555", "example.com:6555"),
            ("https://example.com:6555/v2/", "example.com:6555"),
        ];
        for (input, want) in table {
            assert_eq!(convert_to_hostname(input), want, "input {input:?}");
        }
    }

    /// GitLab Runner `TestConvertToRegistryPath`.
    #[test]
    fn registry_path_table() {
        let table = [
            ("my.hostname", "my.hostname"),
            ("my.hostname/with/path", "my.hostname/with/path"),
            ("my.HOSTNAME/With/Path/CASE", "my.hostname/With/Path/CASE"),
            (
                "my.hostname/with/tag/image:latest",
                "my.hostname/with/tag/image",
            ),
            (
                "my.hostname:5000/with/tag/image:latest",
                "my.hostname:5000/with/tag/image",
            ),
            ("http://index.docker.io/v1/", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("HTTP://INDEX.DOCKER.IO/V1/", "docker.io"),
            ("HTTPS://INDEX.DOCKER.IO/V1/", "docker.io"),
            ("HTTPS://INDEX.DOCKER.IO/V1/blibb", "docker.io"),
            ("https://my.hostname/v1/something", "my.hostname"),
            ("registry.example.com:5000", "registry.example.com:5000"),
            (
                "registry2.domain.tld:5005/image/name:version",
                "registry2.domain.tld:5005/image/name",
            ),
        ];
        for (input, want) in table {
            assert_eq!(registry_path(input), want, "input {input:?}");
        }
    }

    /// GitLab Runner `TestDockerImagePathNormalization`.
    #[test]
    fn gitlab_image_path_table() {
        let table = [
            ("tutum.co/user/ubuntu", "tutum.co/user/ubuntu"),
            ("tutum.co/user/ubuntu:latest", "tutum.co/user/ubuntu"),
            (
                "cr.internal:5000/user/ubuntu",
                "cr.internal:5000/user/ubuntu",
            ),
            ("user/ubuntu", "docker.io/user/ubuntu"),
            ("index.docker.io/user/ubuntu", "docker.io/user/ubuntu"),
            ("docker.io/user/ubuntu", "docker.io/user/ubuntu"),
            ("foo.bar:123/asdf/baz:latest", "foo.bar:123/asdf/baz"),
            ("foo.bar/asdf/baz:latest", "foo.bar/asdf/baz"),
            ("foo.bar/asdf/baz", "foo.bar/asdf/baz"),
            ("registry.local/ns/image", "registry.local/ns/image"),
            ("foo.bar:123/asdf/baz", "foo.bar:123/asdf/baz"),
            ("FOO.BAR:123/With/Case", "foo.bar:123/With/Case"),
            ("DOCKER.io/user/ubuntu", "docker.io/user/ubuntu"),
            ("index.DOCKER.io/user/ubuntu", "docker.io/user/ubuntu"),
            ("InDex.DOCKER.io/user/ubuntu", "docker.io/user/ubuntu"),
            ("localhost/test:xxx", "localhost/test"),
            ("LOCALHOST/test:xxx", "localhost/test"),
            ("notLocalhost/test", "docker.io/notLocalhost/test"),
            ("localhost:1234/test", "localhost:1234/test"),
            ("ubuntu", "docker.io/ubuntu"),
            ("reg.example/name@sha256:abc", "reg.example/name@sha256"),
        ];
        for (input, want) in table {
            assert_eq!(gitlab_image_path(input), want, "input {input:?}");
        }
    }

    #[test]
    fn hub_key() {
        assert_eq!(auth_config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(auth_config_key("index.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(auth_config_key("reg:5000"), "reg:5000");
        assert_eq!(parent_path("a/b/c"), Some("a/b"));
        assert_eq!(parent_path("a"), None);
    }

    #[test]
    fn registry_host_folds_hub_and_keeps_port() {
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "https://registry-1.docker.io/v2/",
            "Docker.IO",
        ] {
            assert_eq!(registry_host(hub), "docker.io", "{hub}");
            assert!(is_docker_hub(&convert_to_hostname(hub)), "{hub}");
        }
        assert_eq!(
            registry_host("https://Registry.Example.com:5000/v2/"),
            "registry.example.com:5000"
        );
        assert_eq!(
            registry_host("registry.example.com:5000/ns/img"),
            "registry.example.com:5000"
        );
        assert_eq!(
            registry_host("gitlab.example.com:443"),
            "gitlab.example.com:443"
        );
        assert_ne!(registry_host("docker.io:443"), "docker.io");
        assert!(!is_docker_hub("docker.io.evil.example"));
    }

    #[test]
    fn split_host_port_as_go_reads_an_authority() {
        for (a, want) in [
            ("reg.example:5000", ("reg.example", Some("5000"))),
            ("reg.example", ("reg.example", None)),
            ("user:pw@reg.example:443", ("reg.example", Some("443"))),
            ("[::1]:5000", ("::1", Some("5000"))),
            ("[fe80::1]", ("fe80::1", None)),
            ("::1", ("::1", None)),
            ("reg.example:abc", ("reg.example", Some("abc"))),
        ] {
            assert_eq!(split_host_port(a), want, "{a}");
            assert_eq!(host_name(a), want.0, "{a}");
        }
    }
}
