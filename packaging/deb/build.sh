#!/usr/bin/env bash
# Build the regauth .deb: release binaries, man pages and shell completions, then `cargo deb`.
#
#   packaging/deb/build.sh [extra cargo-deb options]
#
# Output: target/debian/regauth_<version>-1_<arch>.deb (cargo-deb prints the path).
# Installs cargo-deb from crates.io (`cargo install cargo-deb --locked`) when it is missing.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}

echo "==> cargo build --release --workspace"
cargo build --release --workspace --bins --locked
regauth="$target_dir/release/regauth"

echo "==> man pages and completions into target/assets"
assets="$root/target/assets"
rm -rf "$assets"
mkdir -p "$assets/bin" "$assets/man" "$assets/completions"
helpers=()
for manifest in helpers/*/Cargo.toml; do
    [[ -f "$manifest" ]] || continue
    name=$(sed -n 's/^name *= *"\(docker-credential-[a-z0-9-]*\)".*/\1/p' "$manifest" | head -n 1)
    [[ -n "$name" ]] && helpers+=("$target_dir/release/$name")
done
if ((${#helpers[@]} == 0)); then
    echo "error: no helpers/*/Cargo.toml defines a docker-credential-* package (is helpers/ empty?)" >&2
    exit 1
fi
install -m 0755 "$regauth" "${helpers[@]}" "$assets/bin/"
strip "$assets"/bin/*
echo "binaries: $(cd "$assets/bin" && echo *)"
"$regauth" man --out "$assets/man"
for page in "$assets"/man/docker-credential-*.1; do
    # Pages only for the helpers this build ships.
    [[ -x "$assets/bin/$(basename "$page" .1)" ]] || rm -f "$page"
done
gzip -9n "$assets"/man/*.1
"$regauth" completions bash >"$assets/completions/regauth.bash"
"$regauth" completions zsh >"$assets/completions/_regauth"
"$regauth" completions fish >"$assets/completions/regauth.fish"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-deb --locked"
    cargo install cargo-deb --locked
fi
echo "==> cargo deb --no-build"
cargo deb -p regauth --no-build --no-strip "$@"
