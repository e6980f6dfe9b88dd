#!/usr/bin/env bash
# Runs ShellCheck on every shell script the project ships or tests with.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
mapfile -t scripts < <(
    { find packaging tests -type f \( -name '*.sh' -o -path '*/bin/*' \); \
      grep -rlE '^#!.*(ba|da|)sh' packaging tests 2>/dev/null || true; } | sort -u
)
if ((${#scripts[@]} < 8)); then
    echo "FAIL: found only ${#scripts[@]} scripts: ${scripts[*]}" >&2
    exit 1
fi
printf 'checking %s\n' "${scripts[@]}"
shellcheck -x "${scripts[@]}"
echo "shellcheck clean: ${#scripts[@]} scripts"
