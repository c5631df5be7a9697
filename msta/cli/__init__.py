"""The command-line programs of msta, one module per command, each with `main(argv=None) -> int`.

`scripts/*.py` in a checkout are thin wrappers over these modules.
"""
