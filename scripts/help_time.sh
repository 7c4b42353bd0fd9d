#!/usr/bin/env bash
# Wall time of `ttplan --help` and `ttplan layer --help` (median of 3 runs each); the target is <= 0.5 s.
# Usage: scripts/help_time.sh    (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
for args in "--help" "layer --help" "plan --help"; do
    times=()
    for _ in 1 2 3; do
        start=$(date +%s.%N)
        # shellcheck disable=SC2086
        python -m ttplan $args >/dev/null
        times+=("$(echo "$(date +%s.%N) - $start" | bc)")
    done
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
    printf 'ttplan %-14s median %.2f s  (runs: %s)\n' "$args" "$median" "${times[*]}"
done
