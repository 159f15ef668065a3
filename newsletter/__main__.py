"""`python -m newsletter`: the `newsletter` command (how `send --workers N` starts its workers)."""

from newsletter.cli import main

main()
