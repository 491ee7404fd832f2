"""`python -m cgaug` runs the command line."""

from cgaug.cli import main

main()
