"""A real terminal for end-to-end tests: one tmux server (its own socket) running one command."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.waiting import until_sync

# tmux sometimes leaves an exited command as a zombie without reporting its status
# (pane_dead_status stays empty), so a tiny wrapper that ignores SIGINT itself (the command keeps the
# default, so Ctrl-C still reaches it) records the exit status in a file.
STATUS_WRAPPER = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "rc = subprocess.call(sys.argv[2:], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))\n"
    "open(sys.argv[1], 'w').write(str(rc))\n"
)


class Tmux:
    """One tmux server (its own socket) running one command in a 120x40 pane."""

    def __init__(self, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.socket = f"hero-test-{uuid.uuid4().hex[:10]}"
        # no shell around the command (a shell may die of the Ctrl-C we send); the pane stays after
        # the command exits so that its last screen can be read
        conf = workdir / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\n")
        exports = [f"{k}={v}" for k, v in env.items() if k.isidentifier()]
        self.status_file = workdir / f"{self.socket}.status"
        wrapped = [sys.executable, "-c", STATUS_WRAPPER, str(self.status_file), *command]
        self.run(
            "-f", str(conf), "new-session", "-d", "-x", "120", "-y", "40", "env", "-i", *exports, *wrapped
        )

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "0", "-l", text)

    def key(self, name: str) -> None:
        self.run("send-keys", "-t", "0", name)

    def screen(self) -> str:
        """The pane's text, a line the program wrapped at the 120th column joined back (``-J``): what
        a test looks for (a path under a deep temp dir, say) does not depend on where it wraps."""
        return self.run("capture-pane", "-p", "-J", "-t", "0", "-S", "-200")

    def wait(self, condition: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        """The screen once ``condition`` holds for it; after ``timeout``, AssertionError showing it."""

        def shown() -> list[str]:
            screen = self.screen()
            return [screen] if condition(screen) else []

        [screen] = until_sync(
            shown, timeout=timeout, interval=0.05, what=lambda: f"{what}; screen:\n{self.screen()}"
        )
        return screen

    def wait_text(self, text: str, timeout: float = 20.0) -> str:
        return self.wait(lambda s: text in s, repr(text), timeout)

    def wait_prompt_after(self, text: str) -> None:
        """The prompt is back (drawn, so in raw mode and reading keys) after the last ``text``."""

        def ready(screen: str) -> bool:
            lines = screen.splitlines()
            hits = [i for i, line in enumerate(lines) if text in line]
            return bool(hits) and any(line.rstrip() == "default >" for line in lines[hits[-1] + 1 :])

        self.wait(ready, f"the prompt after {text!r}")

    def wait_exit(self, timeout: float = 20.0) -> int:
        """The command's exit status, once it has exited."""
        self.wait(
            lambda _s: self.status_file.exists() and bool(self.status_file.read_text()),
            "the command to exit",
            timeout,
        )
        return int(self.status_file.read_text())

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30, check=False
        )
