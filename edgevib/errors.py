"""Exception hierarchy shared by every edgevib package.

Each package (``edgevib.edge``, ``edgevib.models``, ``edgevib.cloud``) has its own
``errors`` module whose classes derive from these two roots:

* :class:`RetryableError`: the operation may succeed later (broker away, disk busy).
* :class:`FatalError`: retrying cannot help (bad config, bad file); fix the input.

Every error names the component, the bad value and the fix:

>>> e = ConfigError("agent.config", "window=-1", "use a positive number of samples")
>>> str(e)
'agent.config: window=-1; fix: use a positive number of samples'
"""

from __future__ import annotations


class EdgevibError(Exception):
    """Base class. ``component`` names the part, ``problem`` the bad value, ``fix`` the remedy."""

    retryable: bool = False

    def __init__(self, component: str, problem: str, fix: str = "") -> None:
        self.component = component
        self.problem = problem
        self.fix = fix
        msg = f"{component}: {problem}"
        if fix:
            msg += f"; fix: {fix}"
        super().__init__(msg)


class RetryableError(EdgevibError):
    """The operation may succeed if tried again later."""

    retryable = True


class FatalError(EdgevibError):
    """Retrying cannot help; the input or the set-up must change."""

    retryable = False


class ConfigError(FatalError):
    """A configuration value (file, environment or flag) is invalid."""


class MissingExtraError(FatalError):
    """An optional dependency group is not installed."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            feature,
            f"missing module {module!r}",
            f"pip install 'edgevib[{extra}]'",
        )
