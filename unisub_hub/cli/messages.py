"""How the command line words the library's errors: one table of the flags behind the
library parameters that messages name (see :func:`unisub_hub.errors.option`)."""

from __future__ import annotations

from ..errors import UnisubError

__all__ = ["FLAGS", "flag", "message", "message_text"]

FLAGS: dict[str, str] = {
    "allow_pickle": "--allow-pickle",
    "against": "--against",
    "api_key_env": "--api-key-env",
    "base": "--base",
    "batch_size": "--batch-size",
    "density": "--density",
    "heads": "--heads",
    "method": "--method",
    "weights": "--weights",
    "device": "--device",
    "dtype": "--dtype",
    "exclude": "--exclude",
    "executor": "--executor",
    "fmt": "--format",
    "force": "--force",
    "holdout": "--holdout",
    "include": "--include",
    "k": "--k",
    "keep_state": "--keep-state",
    "lr": "--lr",
    "max_examples": "--max-examples",
    "max_length": "--max-length",
    "seed": "--seed",
    "modes": "--modes",
    "name": "--name",
    "out": "--out",
    "precision": "--precision",
    "push_basis_to": "--push-basis",
    "revision": "--revision",
    "shard_size": "--shard-size",
    "token": "--token",
    "train_head": "--no-train-head",
    "tune_budget": "--tune-budget",
    "tune_on": "--tune-on",
    "variance": "--variance",
    "workers": "--workers",
}
"""Library parameter -> the flag that sets it. ``train_head`` is named where a user turns it off."""


def flag(parameter: str) -> str:
    """The flag for a library parameter. A name missing from :data:`FLAGS` is a bug that
    ``tests/cli/test_messages.py`` catches; an error message still prints, in the usual spelling."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def message_text(text: str) -> str:
    """A library text that names parameters (see :func:`unisub_hub.errors.option`) in the CLI's words."""
    return UnisubError(text).render(flag)


def message(error: UnisubError) -> str:
    """One line for an expected error, in the command line's words."""
    return error.render(flag, with_hint=True)
