#!/usr/bin/env bash
# One entry point for people and CI: sets everything up on a fresh machine, then runs the job.
#   ./dev.sh serve [ARGS]   set up, then run the daemon (`hero-agent serve`) on the embedded store
#   ./dev.sh chat  [ARGS]   set up, then an interactive terminal chat on the embedded store
#   ./dev.sh init / doctor  set up, then write the configuration file / check everything
#   ./dev.sh test  [ARGS]   set up (incl. chromium, tmux and systemd from Debian), then the full test suite
#                           on two worker processes (HERO_AGENT_TEST_WORKERS=N to change, 0: one process)
#   ./dev.sh setup          only the set-up
set -euo pipefail
cd "$(dirname "$0")"

VENV=${HERO_AGENT_VENV:-.venv}
PY=${PYTHON:-python3}

usage() {
  cat <<'TEXT'
usage: ./dev.sh COMMAND [ARGS]
  serve [ARGS]   set up, then run the daemon (`hero-agent serve`) on the embedded store
  chat  [ARGS]   set up, then an interactive terminal chat on the embedded store
  init  [ARGS]   set up, then `hero-agent init`: write the configuration file (provider, key, model...)
  doctor         set up, then `hero-agent doctor`: check everything, with a fix for each failure
  test  [ARGS]   set up (incl. chromium, tmux and systemd from Debian), then the full test suite
  setup          only the set-up
TEXT
}

need_apt() {
  # Debian packages the test suite drives for real: a browser, a terminal multiplexer, ss (iproute2)
  # to close a daemon's listening socket from outside, and systemd-analyze (checks the unit
  # `hero-agent service install` writes), and a PostgreSQL server (the postgres store engine's tests
  # start a throwaway cluster of their own).
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v tmux >/dev/null 2>&1 || missing+=(tmux)
  command -v ss >/dev/null 2>&1 || missing+=(iproute2)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "dev.sh: installing ${missing[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

fresh() {
  # an install stamp newer than pyproject.toml
  [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]
}

setup_python() {
  # One editable install serves every command: the dev extra is a superset of the run set, so after
  # `./dev.sh test` a `./dev.sh serve` installs nothing.
  local extra=$1
  local dev_stamp="$VENV/.installed-dev" run_stamp="$VENV/.installed-run"
  if fresh "$dev_stamp" || { [ "$extra" = run ] && fresh "$run_stamp"; }; then
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  if [ "$extra" = dev ]; then
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    touch "$dev_stamp"
  else
    "$VENV/bin/python" -m pip install -q -e .
    touch "$run_stamp"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    need_apt
    setup_python dev
    ;;
  serve|chat|init|doctor)
    setup_python run
    exec "$VENV/bin/hero-agent" "$cmd" "$@"
    ;;
  test)
    need_apt
    setup_python dev
    # Worker processes (pytest-xdist): the suite mostly waits (fsyncs, browsers, daemons), so two
    # workers cut the wall time even on two cores; HERO_AGENT_TEST_WORKERS=0 runs it in one process.
    # An `-n` or `--dist` given after `test` wins (pytest takes the last one).
    workers=${HERO_AGENT_TEST_WORKERS:-2}
    set +e
    "$VENV/bin/python" -m pytest -n "$workers" --dist loadgroup "$@"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then
      echo "dev.sh: pytest collected no tests: that is a failure" >&2
      exit 1
    fi
    exit $rc
    ;;
  help|-h|--help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
