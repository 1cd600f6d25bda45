"""The backup_target role (borg repositories, prune, offsite copy, drill) and every data host's borgmatic client."""

from __future__ import annotations

from spec.model import Stack


def backup_target(stack: Stack, host: str, plan) -> None:
    """Issue 5."""


def backup_client(stack: Stack, host: str, plan) -> None:
    """Issue 5: borgmatic on every host that holds data."""
