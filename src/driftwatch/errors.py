"""The exception tree of driftwatch.

::

    DriftwatchError
    ├── ConfigError (ValueError)         bad configuration; lists every problem
    │   └── SecretMissingError           a required key or secret is not available
    ├── ProfileError (ValueError)        a reference profile cannot be built or read
    ├── InputError (ValueError)          an input file cannot be read at all
    └── StreamingError (RuntimeError)    the daemon cannot start or run (broker, topics)

A single bad *event* is never an exception: it becomes an
:class:`driftwatch.events.DecodeError` value, counted and set aside.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DriftwatchError", "InputError", "ProfileError", "SecretMissingError", "StreamingError"]


class DriftwatchError(Exception):
    """Root of every error driftwatch raises on purpose."""


class ConfigError(DriftwatchError, ValueError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class SecretMissingError(ConfigError):
    """A key or secret the configuration requires is not available."""


class ProfileError(DriftwatchError, ValueError):
    """A reference profile cannot be built, read, or does not fit the config."""


class InputError(DriftwatchError, ValueError):
    """An input file cannot be read at all (missing, unreadable, wrong format)."""


class StreamingError(DriftwatchError, RuntimeError):
    """The streaming daemon cannot start or run (broker, topics); the message says what to fix."""
