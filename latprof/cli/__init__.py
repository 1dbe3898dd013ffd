"""The command line: a thin click layer over the library. Commands parse, call, print.

`main` (in `app`) is the group; each command family is a module of its own, added here.
`latprof ...` and `python -m latprof ...` run the same group.
"""

from latprof.cli import prune, steps, sweep, tables, train
from latprof.cli.app import main

for command in (sweep.sweep, sweep.models_cmd, steps.steps, steps.wave, tables.tables, prune.prune_cmd,
                train.train_cmd, train.finetune_cmd):
    main.add_command(command)

__all__ = ["main"]
