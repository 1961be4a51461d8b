"""``python -m harness``: the same as the ``qsweep`` command."""
from harness.cli import main

main()
