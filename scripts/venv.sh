# shellcheck shell=bash
# Sourced by scripts/serve and scripts/test: make (or reuse) the repository's
# own virtual environment, ./.venv, and install Conduit into it.
#
# Why a venv: Debian 12's system Python is "externally managed" (PEP 668), so
# `pip install .` into it is refused, and installing around that would mix
# Conduit's pinned dependencies (asyncssh==2.24.1) with the system's packages.
#
# PYTHON picks the interpreter that makes the venv (default: python3; CI uses
# /usr/bin/python3). The venv is reused while its interpreter, pyproject.toml
# and the extras asked for are unchanged; Conduit itself is installed editable,
# so a `git pull` needs no reinstall unless pyproject.toml moved.

CONDUIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONDUIT_VENV="$CONDUIT_ROOT/.venv"

_conduit_sudo() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "venv: need root to run: $*" >&2
    return 1
  fi
}

# apt-get install PACKAGE... (sudo when not root), quietly.
conduit_apt_install() {
  _conduit_sudo apt-get update -qq
  _conduit_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# conduit_venv [EXTRAS]: ./.venv with Conduit installed (with EXTRAS, e.g. "test").
conduit_venv() {
  local extras="${1:-}" python="${PYTHON:-python3}" spec="." stamp want have=""
  if ! command -v "$python" >/dev/null; then
    echo "venv: no Python interpreter '$python' (set PYTHON=/path/to/python3.11)" >&2
    return 1
  fi
  python="$(command -v "$python")"
  [ -n "$extras" ] && spec=".[$extras]"
  stamp="$CONDUIT_VENV/.conduit-stamp"
  # What the venv was made from: the interpreter, its version, the project file.
  want="$python $("$python" -c 'import sys; print(sys.version.split()[0])') \
$(sha256sum "$CONDUIT_ROOT/pyproject.toml" | cut -c1-16)"
  if [ -x "$CONDUIT_VENV/bin/python" ] && [ -f "$stamp" ]; then
    have="$(head -n1 "$stamp")"
    # no extras asked: any install will do; else that set must have been installed
    if [ "$have" = "$want" ] && grep -qx "extras:${extras:-.*}" "$stamp"; then
      return 0  # up to date
    fi
  fi
  # Debian ships the venv module without ensurepip unless python3-venv is installed.
  if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "venv: installing python3-venv with apt-get" >&2
    conduit_apt_install python3-venv
  fi
  if [ ! -x "$CONDUIT_VENV/bin/python" ] || [ "$have" != "$want" ]; then
    "$python" -m venv --clear "$CONDUIT_VENV"
  fi
  echo "venv: installing conduit${extras:+ with [$extras]} into $CONDUIT_VENV" >&2
  (cd "$CONDUIT_ROOT" && "$CONDUIT_VENV/bin/python" -m pip install -q \
    --disable-pip-version-check -e "$spec")
  # The first line says what the venv was made from; then every extras set installed.
  { echo "$want"; [ "$have" = "$want" ] && tail -n +2 "$stamp"; echo "extras:$extras"; } \
    >"$stamp.new" 2>/dev/null || true
  mv "$stamp.new" "$stamp"
}
