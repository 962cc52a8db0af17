#!/usr/bin/env bash
# One entry point for people and CI: sets everything up on a fresh machine, then runs the job.
#   ./dev.sh serve [ARGS]   set up, then run the daemon (`hero-agent serve`) on the embedded store
#   ./dev.sh chat  [ARGS]   set up, then an interactive terminal chat on the embedded store
#   ./dev.sh test  [ARGS]   set up (incl. chromium and tmux from Debian), then the full test suite
#   ./dev.sh setup          only the set-up
set -euo pipefail
cd "$(dirname "$0")"

VENV=${HERO_AGENT_VENV:-.venv}
PY=${PYTHON:-python3}

need_apt() {
  # Debian packages the test suite drives for real: a browser, a terminal multiplexer, and ss (iproute2)
  # to close a daemon's listening socket from outside.
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v tmux >/dev/null 2>&1 || missing+=(tmux)
  command -v ss >/dev/null 2>&1 || missing+=(iproute2)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "dev.sh: installing ${missing[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

setup_python() {
  local extra=$1
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$extra"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    if [ "$extra" = dev ]; then
      "$VENV/bin/python" -m pip install -q -e '.[dev]'
    else
      "$VENV/bin/python" -m pip install -q -e .
    fi
    touch "$stamp"
  fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    need_apt
    setup_python dev
    ;;
  serve|chat)
    setup_python run
    exec "$VENV/bin/hero-agent" "$cmd" "$@"
    ;;
  test)
    need_apt
    setup_python dev
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then
      echo "dev.sh: pytest collected no tests: that is a failure" >&2
      exit 1
    fi
    exit $rc
    ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
