"""First run and operations: ``init`` (the set-up wizard), ``doctor`` (checks with fixes), the systemd
unit of ``service install``. The commands themselves live in :mod:`channels.subcommands`."""
