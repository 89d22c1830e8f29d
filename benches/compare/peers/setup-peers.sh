#!/usr/bin/env bash
# Installs the peers the comparison benchmark runs against configmapwatch,
# from their own registries, into target/peers (cached: a second run only
# checks), and builds the C floor program. Called by the benchmark itself
# (benches/compare/peers.rs) so that `cargo bench --bench compare` works
# from a clean checkout; .ci/run installs the Debian packages beforehand.
#
# A peer that cannot be installed stops the run here, loudly: the benchmark
# never drops a peer silently. Prints one `name<TAB>version` line per peer.
set -Eeuo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
peers="$root/target/peers"
mkdir -p "$peers"
fail() { echo "setup-peers: $*" >&2; exit 1; }

# Debian's tools: inotify-tools (inotifywait), fswatch, strace, bindfs. As
# root with apt-get, a missing one is installed; otherwise it is an error.
missing=()
for pair in inotifywait:inotify-tools fswatch:fswatch strace:strace bindfs:bindfs fusermount3:fuse3 setpriv:util-linux gcc:gcc; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup-peers: installing ${missing[*]} (Debian)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    fail "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
  fi
fi
# fswatch's poll monitor is a build option: Debian's package has it, but
# the benchmark must not assume so.
fswatch -M | grep -qw poll_monitor || fail "this fswatch has no poll_monitor ($(fswatch -M | tr '\n' ' '))"

# PyPI watchdog, into its own directory (PYTHONPATH), leaving the system's
# site-packages alone.
if ! PYTHONPATH="$peers/python" python3 -c 'import watchdog' 2>/dev/null; then
  echo "setup-peers: pip install watchdog" >&2
  python3 -m pip install -q --disable-pip-version-check --target "$peers/python" watchdog >&2 \
    || fail "pip install watchdog failed"
fi

# crates.io watchexec-cli: notify's PollWatcher behind `--poll`.
if [[ ! -x "$peers/bin/watchexec" ]]; then
  echo "setup-peers: cargo install watchexec-cli (a few minutes, once)" >&2
  cargo install -q --locked --root "$peers" watchexec-cli >&2 || fail "cargo install watchexec-cli failed"
fi

# Ours as shipped in the container image: the static musl build, whose idle
# memory has its own target. Its own target directory: the running
# `cargo bench` holds the lock on target/.
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
  || fail "the Rust target x86_64-unknown-linux-musl is missing (rustup target add x86_64-unknown-linux-musl)"
(cd "$root" && cargo build -q --release --locked --target x86_64-unknown-linux-musl \
  --target-dir "$peers/musl" --bin configmapwatch >&2) || fail "the static musl build failed"

# The floor: what a poller cannot go below on this machine.
gcc -O2 -Wall -Werror -o "$peers/floor" "$root/benches/compare/peers/floor.c" || fail "gcc failed on floor.c"

printf 'watchdog\t%s\n' "$(PYTHONPATH="$peers/python" python3 -c 'import watchdog.version as v; print(v.VERSION_STRING)') (Python $(python3 -c 'import platform; print(platform.python_version())'))"
printf 'watchexec\t%s\n' "$("$peers/bin/watchexec" --version | head -1)"
printf 'inotifywait\t%s\n' "$(inotifywait --help 2>&1 | head -1)"
printf 'fswatch\t%s\n' "$(fswatch --version | head -1)"
printf 'floor\t%s\n' "$(gcc --version | head -1)"
printf 'bindfs\t%s\n' "$(bindfs --version | head -1)"
