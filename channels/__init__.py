"""Channels adapt the outside world (terminal, Telegram, web) to the agent; the composition root
(the ``hero-agent`` command line and the daemon) lives here too, the outermost layer."""
