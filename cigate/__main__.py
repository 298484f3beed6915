"""``python -m cigate``: the ``cigate`` command, for environments without the script on PATH."""

from cigate.cli import main

main(prog_name="cigate")
