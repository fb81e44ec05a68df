#!/usr/bin/env bash
# Checks that the README's two commands work on a fresh machine: makes a clean Debian 12
# (bookworm) root with debootstrap, puts a fresh clone of this repository in it, and runs
# `./dev quickstart` then `./dev test` there as a new user would, timing each.
#
#   sudo nice -n 19 scripts/fresh-machine.sh [--ref REF] [--with PATH]... [--keep] [--no-test]
#
# The fresh root has Debian's minbase, python3 and sudo, a user `dev` (passwordless sudo) and
# the Rust toolchains of the machine's rustup, mounted read-only at /opt/rustup and
# /opt/cargo/bin (as rustup's installer would put them on PATH); its CARGO_HOME (crates.io
# downloads) is the user's own ~/.cargo, empty. Everything else must come from scripts/setup.sh:
# apt (through the mirror the machine's apt uses), PyPI, crates.io, the Go module proxy, Maven
# Central. Needs root (debootstrap, chroot, unshare, mounts), ~25 GB of disk, and takes about an hour
# on 2 cores (RocksDB, librdkafka and MinIO are compiled from source): too slow for CI.
#
# Options:
#   --ref REF      clone this commit, branch or tag (default: HEAD)
#   --with PATH    copy PATH (a file or folder, tracked and untracked files) from this working
#                  tree over the clone: tests uncommitted changes (repeatable)
#   --keep         keep the root (and print how to enter it) instead of deleting it
#   --no-test      run `./dev quickstart` only
#   --dir DIR      make the root in DIR (must not exist; default /var/tmp/headwater-fresh.XXXXXX)
#   --mirror URL   Debian mirror (default: the first Debian URI in /etc/apt/sources.list*)
#   --suite NAME   Debian suite (default: bookworm)
# Logs go to <root>.logs/ (kept).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
REF=HEAD
KEEP=0
RUN_TEST=1
ROOT=""
MIRROR=""
SUITE=bookworm
WITH=()
USER_NAME=dev

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --ref) REF=${2:?--ref needs a value}; shift 2 ;;
    --with) WITH+=("${2:?--with needs a path}"); shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-test) RUN_TEST=0; shift ;;
    --dir) ROOT=${2:?--dir needs a value}; shift 2 ;;
    --mirror) MIRROR=${2:?--mirror needs a value}; shift 2 ;;
    --suite) SUITE=${2:?--suite needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fresh-machine: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
say() { printf '\n[fresh %s +%dm%02ds] %s\n' "$(date +%H:%M:%S)" $(((SECONDS - T0) / 60)) $(((SECONDS - T0) % 60)) "$*" >&2; }
die() { echo "fresh-machine: error: $*" >&2; exit 1; }
fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mounts): sudo $0 $*"
command -v git >/dev/null || die "git is needed to clone the repository"
COMMIT=$(git -C "$REPO" rev-parse --verify "$REF^{commit}") || die "no commit '$REF' in $REPO"

# The invoking user's rustup (sudo: the user who ran sudo).
INVOKER_HOME=$HOME
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then INVOKER_HOME=$(getent passwd "$SUDO_USER" | cut -d: -f6); fi
RUSTUP_SRC=${RUSTUP_HOME:-$INVOKER_HOME/.rustup}
CARGO_BIN_SRC=${CARGO_HOME:-$INVOKER_HOME/.cargo}/bin
[ -d "$RUSTUP_SRC/toolchains" ] || die "no rustup toolchains in $RUSTUP_SRC (set RUSTUP_HOME)"
[ -x "$CARGO_BIN_SRC/cargo" ] || die "no rustup proxies in $CARGO_BIN_SRC (set CARGO_HOME)"

# The Debian mirror this machine's apt uses (deb822 .sources or one-line .list files).
find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    case "$f" in *.sources)
      awk 'tolower($1)=="uris:" {for (i=2;i<=NF;i++) print $i}' "$f" ;;
    *)
      awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z+]+:\/\//) {print $i; break}}' "$f" ;;
    esac
  done | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1
}
[ -n "$MIRROR" ] || MIRROR=$(find_mirror)
[ -n "$MIRROR" ] || die "found no Debian mirror in /etc/apt/sources.list*: give one with --mirror URL"

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

if [ -z "$ROOT" ]; then
  ROOT=$(mktemp -d /var/tmp/headwater-fresh.XXXXXX)
  rmdir "$ROOT"
fi
[ ! -e "$ROOT" ] || die "$ROOT exists; give a new --dir"
ROOT=$(realpath -m "$ROOT")
LOGS="$ROOT.logs"
mkdir -p "$LOGS"

# ---- clean-up: processes left in the root, mounts, the root ---------------------------------------
MOUNTS=()
mounts_under_root() { awk -v r="$ROOT" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo; }
root_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && echo "${p#/proc/}"
  done
  return 0
}
cleanup() {
  local rc=$? pids i m
  trap - EXIT INT TERM
  # Processes still running inside the root (a broker or server a failed test left) were all
  # started by this script: stop them by pid so that the mounts can go.
  pids=$(root_pids)
  if [ -n "$pids" ]; then
    say "stopping processes left in the root: $(echo $pids)"
    kill -TERM $pids 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1; [ -n "$(root_pids)" ] || break; done
    pids=$(root_pids)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    sleep 1
  fi
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  # Anything else mounted under the root (deepest first).
  for m in $(mounts_under_root | sort -r); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  if [ -n "$(mounts_under_root)" ]; then
    echo "fresh-machine: still mounted under $ROOT (not deleting it):" >&2
    mounts_under_root >&2
  elif ((KEEP)); then
    echo "fresh-machine: kept the root: $ROOT (logs: $LOGS). Enter it with:" >&2
    echo "  sudo mount -t proc proc $ROOT/proc && sudo chroot $ROOT su - $USER_NAME" >&2
  elif [ -d "$ROOT" ]; then
    echo "fresh-machine: deleting $ROOT (logs stay in $LOGS)" >&2
    rm -rf --one-file-system "$ROOT"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mount_at ARGS... TARGET: mounts, remembers TARGET for the clean-up, keeps it private (no
# propagation to or from the machine's mounts).
mount_at() {
  local target=${*: -1}
  mkdir -p "$target"
  mount "$@"
  MOUNTS+=("$target")
  mount --make-private "$target"
}
bind_ro() { # bind_ro SRC TARGET
  mount_at --bind "$1" "$2"
  mount -o remount,bind,ro "$2"
}

# ---- 1. the root ------------------------------------------------------------------------------------
say "1/6 debootstrap $SUITE (minbase + python3 + sudo) from $MIRROR into $ROOT"
t=$SECONDS
if ! debootstrap --variant=minbase --include=python3,sudo "$SUITE" "$ROOT" "$MIRROR" \
    >"$LOGS/debootstrap.log" 2>&1; then
  tail -n 30 "$LOGS/debootstrap.log" >&2
  die "debootstrap failed (log: $LOGS/debootstrap.log)"
fi
T_DEBOOTSTRAP=$((SECONDS - t))
say "debootstrap done in $(fmt_time $T_DEBOOTSTRAP): $(cat "$ROOT/etc/debian_version"), $(du -sh --one-file-system "$ROOT" | cut -f1)"

# ---- 2. mounts, network, the user ------------------------------------------------------------------
say "2/6 mounts (/proc, /sys read-only, /dev/pts, /dev/shm), DNS, user $USER_NAME with sudo"
mount_at -t proc proc "$ROOT/proc"
mount_at -t sysfs -o ro sysfs "$ROOT/sys"
mount_at -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$ROOT/dev/pts"
mount_at -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
# debootstrap made the device nodes; /dev/ptmx must be the new devpts instance's.
rm -f "$ROOT/dev/ptmx" && ln -s pts/ptmx "$ROOT/dev/ptmx"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/hosts "$ROOT/etc/hosts"
grep -qw "$(hostname)" "$ROOT/etc/hosts" || echo "127.0.1.1 $(hostname)" >>"$ROOT/etc/hosts"
# The machine's network set-up, which a fresh machine on the same network would need too (it is
# not Headwater's): extra CA certificates it trusts (a TLS-inspecting proxy's; the ca-certificates
# package, once setup.sh installs it, adds them to the system bundle that cargo, go, Java and
# pip.conf use), its pip.conf, and the proxy variables (passed to the user's commands).
NET_NOTES=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  NET_NOTES+=("extra CA certificates: $(cd /usr/local/share/ca-certificates && echo *.crt)")
fi
if [ -f /etc/pip.conf ]; then
  cp /etc/pip.conf "$ROOT/etc/pip.conf"
  NET_NOTES+=("/etc/pip.conf")
fi
PROXY_ENV=()
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && PROXY_ENV+=("$v=${!v}") && NET_NOTES+=("\$$v")
done
((${#NET_NOTES[@]})) && echo "  copied the machine's network set-up: ${NET_NOTES[*]}" >&2
chroot "$ROOT" useradd --create-home --shell /bin/bash "$USER_NAME"
echo "$USER_NAME ALL=(ALL) NOPASSWD:ALL" >"$ROOT/etc/sudoers.d/$USER_NAME"
chmod 440 "$ROOT/etc/sudoers.d/$USER_NAME"
DEV_UID=$(chroot "$ROOT" id -u "$USER_NAME")
DEV_GID=$(chroot "$ROOT" id -g "$USER_NAME")
DEV_HOME=/home/$USER_NAME

# ---- 3. Rust: the machine's rustup toolchains, read-only ------------------------------------------
# Each toolchain is mounted by its real path (rustup may keep a toolchain as a symlink to another
# one, by absolute path), the proxies (cargo, rustc, rustup ...) at /opt/cargo/bin.
say "3/6 Rust: $RUSTUP_SRC toolchains and $CARGO_BIN_SRC, read-only, at /opt/rustup and /opt/cargo/bin"
mkdir -p "$ROOT/opt/rustup/toolchains" "$ROOT/opt/cargo/bin"
cp "$RUSTUP_SRC/settings.toml" "$ROOT/opt/rustup/" 2>/dev/null || true
[ -d "$RUSTUP_SRC/update-hashes" ] && cp -r "$RUSTUP_SRC/update-hashes" "$ROOT/opt/rustup/"
for tc in "$RUSTUP_SRC"/toolchains/*; do
  [ -d "$tc" ] || continue
  bind_ro "$(readlink -f "$tc")" "$ROOT/opt/rustup/toolchains/$(basename "$tc")"
done
bind_ro "$(readlink -f "$CARGO_BIN_SRC")" "$ROOT/opt/cargo/bin"
chmod 755 "$ROOT/opt/rustup" "$ROOT/opt/rustup/toolchains"
# What rustup's installer adds to ~/.profile and ~/.bashrc (". $HOME/.cargo/env"), with the
# shared, read-only RUSTUP_HOME; CARGO_HOME is the user's own (~/.cargo, writable, empty).
cat >"$ROOT$DEV_HOME/.rust-env" <<'EOF'
export RUSTUP_HOME=/opt/rustup
case ":$PATH:" in *:/opt/cargo/bin:*) ;; *) export PATH="/opt/cargo/bin:$PATH" ;; esac
EOF
echo '. "$HOME/.rust-env"' >>"$ROOT$DEV_HOME/.profile"
echo '. "$HOME/.rust-env"' >>"$ROOT$DEV_HOME/.bashrc"

# ---- 4. the clone -----------------------------------------------------------------------------------
say "4/6 fresh clone of $REPO at $(git -C "$REPO" log -1 --format='%h %s' "$COMMIT")"
CLONE="$ROOT$DEV_HOME/headwater"
git clone -q --no-hardlinks "$REPO" "$CLONE"
git -C "$CLONE" -c advice.detachedHead=false checkout -q --detach "$COMMIT"
for path in "${WITH[@]}"; do
  # Tracked and untracked (not ignored) files of PATH as they are in the working tree; files
  # deleted there are deleted in the clone.
  n=0
  while IFS= read -r -d '' f; do
    if [ -e "$REPO/$f" ] || [ -L "$REPO/$f" ]; then
      mkdir -p "$CLONE/$(dirname "$f")"
      cp -a "$REPO/$f" "$CLONE/$f"
    else
      rm -f "$CLONE/$f"
    fi
    n=$((n + 1))
  done < <(git -C "$REPO" ls-files -z --cached --others --exclude-standard -- "$path")
  ((n)) || die "--with $path: no such file or folder in $REPO"
  echo "  --with $path: $n file(s) from the working tree" >&2
done
if ((${#WITH[@]})); then
  echo "  changes over $(git -C "$REPO" rev-parse --short "$COMMIT") in the clone:" >&2
  git -C "$CLONE" status --short >&2
fi
chown -R "$DEV_UID:$DEV_GID" "$ROOT$DEV_HOME"

# in_root COMMAND...: runs COMMAND with $ROOT as the root of a mount namespace of its own.
# pivot_root rather than chroot: the kernel refuses user namespaces to a chrooted process, and
# a test makes one (the full-disk checkpoint test mounts a small tmpfs in it), as a user on a
# real machine can. The root's mounts (proc, dev, the toolchains) come along with --rbind.
in_root() {
  unshare --mount --propagation private -- /bin/sh -c '
    root=$1; shift
    mount --rbind "$root" "$root" && cd "$root" && mkdir -p .old-root &&
      pivot_root . .old-root && umount -l /.old-root && exec "$@"' sh "$ROOT" "$@"
}

# as_user COMMAND: runs COMMAND (bash) as the user, in a login shell, in the clone.
as_user() {
  in_root chroot --userspec="$DEV_UID:$DEV_GID" / /usr/bin/env -i HOME="$DEV_HOME" \
    USER="$USER_NAME" LOGNAME="$USER_NAME" SHELL=/bin/bash LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/bin:/usr/bin:/bin ${PROXY_ENV[@]+"${PROXY_ENV[@]}"} \
    /bin/bash -lc "cd ~/headwater && $1"
}

say "5/6 what the new user has before the first command"
as_user 'echo "  $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version), $(cargo --version) via rustup $(rustup --version 2>/dev/null | head -n1 | cut -d" " -f2)"
  for c in go java mvn cmake cc c++ pkg-config git curl protoc; do command -v "$c" >/dev/null && echo "  $c: $(command -v "$c")" || echo "  $c: none"; done
  python3 -c "import ensurepip" 2>/dev/null && echo "  python3 has ensurepip" || echo "  python3 has no ensurepip (no python3-venv)"
  echo "  $(dpkg-query -W | wc -l) Debian packages"' 2>&1 | tee "$LOGS/before.txt" >&2
chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort >"$LOGS/packages-before.txt"

# ---- 6. the README's commands ------------------------------------------------------------------------
# run_step NAME COMMAND: runs it as the user, logs to $LOGS/NAME.log, records time and status.
declare -A TIME STATUS
run_step() {
  local name=$1 cmd=$2 t rc
  say "6/6 \`$cmd\` as $USER_NAME in the fresh root (log: $LOGS/$name.log)"
  t=$SECONDS
  set +e
  as_user "$cmd" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  TIME[$name]=$((SECONDS - t))
  STATUS[$name]=$rc
  say "\`$cmd\`: exit $rc after $(fmt_time "${TIME[$name]}")"
  return 0
}
STEPS=(quickstart)
run_step quickstart "./dev quickstart"
if [ "${STATUS[quickstart]}" = 0 ]; then
  chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort >"$LOGS/packages-after-quickstart.txt"
  STEPS+=(quickstart-again)
  run_step quickstart-again "./dev quickstart >/dev/null"
  if ((RUN_TEST)); then
    STEPS+=(test)
    run_step test "./dev test"
  fi
fi
chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort >"$LOGS/packages-after.txt"

# ---- summary ---------------------------------------------------------------------------------------
{
  echo
  echo "==================== fresh-machine summary ===================="
  echo "commit:      $(git -C "$REPO" log -1 --format='%h %s' "$COMMIT")"
  ((${#WITH[@]})) && echo "overlaid:    ${WITH[*]} (from the working tree)"
  echo "root:        Debian $(cat "$ROOT/etc/debian_version") ($SUITE, minbase + python3 + sudo), mirror $MIRROR"
  echo "debootstrap: $(fmt_time "$T_DEBOOTSTRAP")"
  for s in "${STEPS[@]}"; do
    printf '%-18s exit %s, %s\n' "$s:" "${STATUS[$s]}" "$(fmt_time "${TIME[$s]}")"
  done
  echo "setup installed $(comm -13 "$LOGS/packages-before.txt" "$LOGS/packages-after.txt" | wc -l) Debian packages;" \
    "requested by name (apt-mark showmanual, new):"
  chroot "$ROOT" apt-mark showmanual | sort | comm -13 <(sort "$LOGS/packages-before.txt") - \
    | tr '\n' ' ' | fold -s -w 100 | sed 's/^/  /'
  echo
  grep -h '^setup: ' "$LOGS"/quickstart.log "$LOGS"/test.log 2>/dev/null | sed 's/^/  /' | head -n 40 || true
  echo "disk used in the user's home:"
  as_user 'du -sh ~/.cache/headwater/* ~/.cargo ~/go 2>/dev/null | sed "s|$HOME|~|; s/^/  /"' || true
  if [ -f "$LOGS/test.log" ]; then
    echo "cargo test results:"
    grep -E '^test result:' "$LOGS/test.log" | sort | uniq -c | sed 's/^/  /' || true
    if grep -qE '^failures:|FAILED|^error' "$LOGS/test.log"; then
      echo "failures:"
      grep -E '^    [A-Za-z0-9_:]+$|^test .* FAILED|^error(\[|:)' "$LOGS/test.log" | sort -u | head -n 40 | sed 's/^/  /' || true
    fi
    echo "last step reached: $(grep -E '^==> ' "$LOGS/test.log" | tail -n 1)"
  fi
  echo "logs: $LOGS"
  echo "total: $(fmt_time $((SECONDS - T0)))"
} 2>&1 | tee "$LOGS/summary.txt" >&2

for s in "${STEPS[@]}"; do [ "${STATUS[$s]}" = 0 ] || exit 1; done
((RUN_TEST)) && [ -z "${STATUS[test]:-}" ] && exit 1
exit 0
