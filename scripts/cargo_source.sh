# Pick where cargo gets the crates for rustbpe: crates.io when it answers, else Debian's crate sources.
#
# Source it (it sets nothing in your shell but may write a file), then build:
#     source scripts/cargo_source.sh && pip install -e .
# Force a side with NANOCHAT_CARGO_SOURCE=online|offline (default: auto, a 5 s probe of crates.io).
#
# Offline, Debian's librust-*-dev packages unpack crate sources under /usr/share/cargo/registry, a
# layout cargo reads as a "directory source". We point crates-io at it in `.cargo/config.toml` at the
# repo root. Why that file and not env vars or ~/.cargo/config.toml:
#   * cargo reads .cargo/config.toml from its working directory upward; maturin runs cargo from the repo
#     root under both `pip install -e .` and `pip install .` (pip builds in place), so both pick it up,
#     and so does a plain `cargo test` or `maturin build` run later from a new shell, where exported
#     CARGO_* variables would be gone;
#   * it is git-ignored (/.cargo/ in .gitignore): nothing committed can break a machine with internet;
#   * ~/.cargo/config.toml would silently redirect every other Rust project of the user.
# Online we leave cargo alone, and remove our own offline config (recognised by its first line) plus
# the Cargo.lock it produced: Debian's directory source records no checksums, so a lock written
# offline makes an online cargo refuse to build ("checksum ... could now be calculated"). For the same
# reason no Cargo.lock is committed; rustbpe/Cargo.toml pins its direct dependencies exactly instead.

_nanochat_cargo_source() {
    local root cfg marker registry mode
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cfg="$root/.cargo/config.toml"
    marker="# written by scripts/cargo_source.sh (offline: Debian crate sources); safe to delete"
    registry=/usr/share/cargo/registry
    mode="${NANOCHAT_CARGO_SOURCE:-auto}"

    # --- probe crates.io (sparse index config: tiny, and what cargo itself fetches first)
    if [ "$mode" = auto ]; then
        if command -v curl >/dev/null 2>&1; then
            curl -fsS --max-time 5 -o /dev/null https://index.crates.io/config.json 2>/dev/null && mode=online || mode=offline
        else
            python3 -c "import urllib.request as u; u.urlopen('https://index.crates.io/config.json', timeout=5)" \
                >/dev/null 2>&1 && mode=online || mode=offline
        fi
    fi

    if [ "$mode" = online ]; then
        if [ -f "$cfg" ] && head -n 1 "$cfg" | grep -qF "$marker"; then
            rm -f "$cfg" "$root/Cargo.lock"
            echo "cargo_source: crates.io reachable; removed the offline .cargo/config.toml and its Cargo.lock"
        else
            echo "cargo_source: crates.io reachable; using it"
        fi
        return 0
    fi

    # --- offline: make sure Debian ships every crate of the build graph (exact versions), install if not.
    # This is the full resolved graph (`cargo tree --prefix none` on the offline build), as name-version.
    local needed="ahash-0.7.6 aho-corasick-0.7.19 autocfg-1.1.0 bit-set-0.5.2 bit-vec-0.6.3 cfg-if-1.0.0
        crossbeam-channel-0.5.6 crossbeam-deque-0.8.1 crossbeam-epoch-0.9.13 crossbeam-utils-0.8.12
        either-1.6.1 fancy-regex-0.7.1 getrandom-0.2.8 indoc-1.0.4 libc-0.2.139 lock_api-0.4.9 memchr-2.5.0
        memoffset-0.6.5 num_cpus-1.14.0 once_cell-1.17.0 parking_lot-0.12.1 parking_lot_core-0.9.3
        proc-macro2-1.0.47 pyo3-0.17.3 pyo3-build-config-0.17.3 pyo3-ffi-0.17.3 pyo3-macros-0.17.3
        pyo3-macros-backend-0.17.3 quote-1.0.21 rayon-1.6.1 rayon-core-1.10.1 regex-1.7.1 regex-syntax-0.6.27
        scopeguard-1.1.0 smallvec-1.9.0 syn-1.0.107 target-lexicon-0.12.3 unicode-ident-1.0.0 unindent-0.1.8
        version_check-0.9.4"
    local crate pkgs=""
    for crate in $needed; do
        if [ ! -d "$registry/$crate" ]; then
            # Debian names the package after the crate: librust-<name with _ as ->-dev
            pkgs="$pkgs librust-$(echo "${crate%-*}" | tr '_' '-')-dev"
        fi
    done
    if [ -n "$pkgs" ]; then
        echo "cargo_source: crates.io unreachable; installing Debian crate sources:$pkgs"
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq && $sudo apt-get install -y -qq $pkgs || {
            echo "cargo_source: apt-get install failed; install$pkgs by hand (or give this machine crates.io)" >&2
            return 1
        }
        for crate in $needed; do
            if [ ! -d "$registry/$crate" ]; then
                echo "cargo_source: Debian has no $crate (a different version?); rustbpe/Cargo.toml pins it" >&2
                return 1
            fi
        done
    fi
    mkdir -p "$root/.cargo"
    if [ -f "$cfg" ] && head -n 1 "$cfg" | grep -qF "$marker"; then
        echo "cargo_source: crates.io unreachable; using Debian crate sources in $registry (config already there)"
        return 0
    fi
    if [ -f "$cfg" ]; then
        echo "cargo_source: $cfg exists and was not written by this script; leaving it alone" >&2
        return 0
    fi
    cat > "$cfg" <<EOF
$marker
# crates.io is unreachable from this machine: resolve crates from Debian's librust-*-dev sources.
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "$registry"

[net]
offline = true
EOF
    rm -f "$root/Cargo.lock" # a lock resolved against crates.io carries checksums the directory lacks
    echo "cargo_source: crates.io unreachable; wrote $cfg (Debian crate sources in $registry)"
}
# run it, then leave nothing behind in the caller's shell; a failure stays visible to `set -e` callers
if _nanochat_cargo_source; then
    unset -f _nanochat_cargo_source
else
    unset -f _nanochat_cargo_source
    false
fi
