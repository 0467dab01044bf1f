#!/usr/bin/env bash
# Install mirage-reffiles as a user would, from a wheel built from this
# checkout, into a fresh virtual environment outside it; then, from a folder
# that is not the checkout, run the offline demo and a small real build
# against a local test mirror. Used by CI (.ci/run).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$scratch"' EXIT

# Build from a copy, so the checkout gets no build/ folder.
mkdir -p "$scratch/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 cp --parents -t "$scratch/src")
python3 -m pip wheel --quiet --no-deps --wheel-dir "$scratch/dist" "$scratch/src"
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$scratch"/dist/mirage_reffiles-*.whl

cd "$scratch"
export PATH="$scratch/venv/bin:$PATH"
unset PYTHONPATH MIRAGE_DATA
mirage-reffiles --version
python -m mirage_reffiles.demo fgs_raw --dir "$scratch/demo"
python -m mirage_reffiles.mirror "$scratch/mirror" --instrument fgs
python -m mirage_reffiles.server "$scratch/mirror" > "$scratch/server.out" &
server_pid=$!
for _ in $(seq 50); do grep -q "Serving" "$scratch/server.out" 2>/dev/null && break; sleep 0.1; done
url="$(awk '{print $NF}' "$scratch/server.out")"
mirage-reffiles "$scratch/build" --instrument fgs --single-dark --base-url "$url" \
    --config "reference_table=$scratch/mirror/pinned_table.csv"
test -s "$scratch/build/mirage_data/mirage_env.sh"
echo "The wheel works from a fresh environment: $(ls "$scratch"/dist)"
