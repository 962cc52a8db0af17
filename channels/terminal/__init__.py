"""The terminal channel: ``hero-agent chat`` (interactive, prompt_toolkit; :mod:`channels.terminal.session`)
and the rendering it shares with ``hero-agent ask``. Nothing is imported here, so that the command line
starts without loading the agent."""
