"""unisub-hub: universal weight subspaces as a model hub."""

__version__ = "0.2.0"
