"""``python -m unisub_hub`` runs the command line."""

from .cli import main

main()
