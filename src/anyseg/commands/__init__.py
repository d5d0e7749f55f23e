"""The ``anyseg`` sub-commands, one module per group: each has ``add_parser(sub)`` and ``run(args) -> int``.

:mod:`anyseg.cli` lists them in its :data:`~anyseg.cli.COMMANDS` table and dispatches by name;
the modules here parse options, check them, call the tasks and print one status line. Shared
option help and checks are in :mod:`anyseg.commands.options`. Nothing is imported here, so that
``import anyseg.commands.x`` stays light (the tasks and models are imported when a command runs).
"""
