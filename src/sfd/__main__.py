"""``python -m sfd`` (and ``torchrun -m sfd``) runs the command line."""

from sfd.cli import main

main()
