#!/usr/bin/env bash
# Build the regauth image offline: static binaries on the host, a staged context, `docker build`.
#
#   packaging/docker/build.sh [--tag NAME:TAG] [--debug] [--no-cargo]
#
# Compiles every workspace binary (regauth + docker-credential-*; or regauth + only the helper packages
# named in $REGAUTH_IMAGE_HELPERS, space-separated — the tests use that to skip the heavy AWS and
# keyring builds) for the host triple with
# `-C target-feature=+crt-static` into $REGAUTH_STATIC_TARGET_DIR (default target/static, separate
# from target/ so the normal dynamic builds are not invalidated), checks that each is static, stages
# rootfs/ + state/ and runs the classic builder with --network none: no base image, no download.
set -euo pipefail

tag=regauth:latest
profile=release
run_cargo=1
usage() {
    echo "usage: $(basename "$0") [--tag NAME:TAG] [--debug] [--no-cargo]"
    echo "  --tag NAME:TAG  image name (default regauth:latest)"
    echo "  --debug         stage (stripped) debug binaries: quicker to build, larger image"
    echo "  --no-cargo      do not run cargo; use binaries already built in the static target dir"
}
while [[ $# -gt 0 ]]; do
    case "$1" in
    --tag)
        [[ $# -ge 2 && -n "$2" ]] || { usage >&2; exit 2; }
        tag=$2
        shift 2
        ;;
    --debug) profile=debug; shift ;;
    --no-cargo) run_cargo=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${REGAUTH_STATIC_TARGET_DIR:-$root/target/static}
out="$target_dir/$triple/$profile"

if ((run_cargo)); then
    # --debug is the tests' quick path: a second, static compile of every dependency, so it is kept
    # as cheap as it can be: no debug info at all (no line tables to link) and dependencies at
    # opt-level 0. The binaries are stripped when staged below.
    cargo_profile=(--config 'profile.dev.debug=false' --config 'profile.dev.package."*".opt-level=0')
    [[ $profile == release ]] && cargo_profile=(--release)
    # --target keeps RUSTFLAGS away from build scripts and proc-macros (which must stay dynamic).
    packages=(--workspace)
    if [[ -n "${REGAUTH_IMAGE_HELPERS:-}" ]]; then
        packages=(-p regauth)
        for h in $REGAUTH_IMAGE_HELPERS; do packages+=(-p "$h"); done
    fi
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
        cargo build "${packages[@]}" --bins --locked "${cargo_profile[@]}" --target "$triple"
fi

# The workspace's binaries only (a stale docker-credential-* left in the target dir by another
# checkout must not slip into the image): regauth + every helpers/*/Cargo.toml package name.
bins=("$out/regauth")
if [[ -n "${REGAUTH_IMAGE_HELPERS:-}" ]]; then
    for h in $REGAUTH_IMAGE_HELPERS; do bins+=("$out/$h"); done
else
    for manifest in helpers/*/Cargo.toml; do
        [[ -f "$manifest" ]] || continue
        name=$(sed -n 's/^name *= *"\(docker-credential-[a-z0-9-]*\)".*/\1/p' "$manifest" | head -n 1)
        [[ -n "$name" ]] && bins+=("$out/$name")
    done
fi
for b in "${bins[@]}"; do
    if [[ ! -x "$b" ]]; then
        echo "error: $b is missing (build first, or drop --no-cargo)" >&2
        exit 1
    fi
done
for b in "${bins[@]}"; do
    # Static (static-pie) means no program interpreter and no NEEDED shared libraries.
    if readelf -l "$b" | grep -q 'program interpreter' || readelf -d "$b" | grep -q '(NEEDED)'; then
        echo "error: $b is dynamically linked; the scratch image needs static binaries" >&2
        readelf -d "$b" | grep '(NEEDED)' >&2 || true
        exit 1
    fi
done

ctx=$(mktemp -d "${TMPDIR:-/tmp}/regauth-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
install -d -m 0755 "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs"
install -d -m 1777 "$ctx/rootfs/tmp"
for b in "${bins[@]}"; do
    install -m 0755 "$b" "$ctx/rootfs/usr/local/bin/"
    # Debug binaries too: symbols are dead weight in the image (and in the build context docker copies).
    strip "$ctx/rootfs/usr/local/bin/$(basename "$b")"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nregauth:x:65532:65532:regauth:/home/regauth:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nregauth:x:65532:\n' >"$ctx/rootfs/etc/group"
# Static glibc >= 2.34 has the files and dns NSS modules built in; this names them explicitly.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"
if [[ -r /etc/ssl/certs/ca-certificates.crt ]]; then
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
else
    echo "warning: no /etc/ssl/certs/ca-certificates.crt on this host; the image has no CA bundle" >&2
fi
install -d -m 0700 "$ctx/state/etc/regauth/docker" "$ctx/state/var/cache/regauth" "$ctx/state/home/regauth"
printf '{\n  "credsStore": "file"\n}\n' >"$ctx/state/etc/regauth/docker/config.json"
chmod 0600 "$ctx/state/etc/regauth/docker/config.json"
cp packaging/docker/Dockerfile "$ctx/Dockerfile"

echo "building $tag from $out (${#bins[@]} binaries)"
DOCKER_BUILDKIT=0 docker build --network none --tag "$tag" \
    --label org.opencontainers.image.version="$("$out/regauth" --version | awk '{print $2}')" \
    "$ctx"
docker image inspect --format 'image {{.RepoTags}} {{.Size}} bytes, user {{.Config.User}}' "$tag"
