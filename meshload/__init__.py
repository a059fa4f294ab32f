"""The `meshload` command line: one sub-command per module (`cmd_*`), wired in `cli`.

It is the only package that imports all the others: `meshcore` (the contract), `loadgen`,
`meshsim` and `analysis`.
"""

from meshcore import __version__

__all__ = ["__version__"]
