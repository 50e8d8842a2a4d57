from __future__ import annotations

import pytest

from edgevib.errors import ConfigError, FatalError, MissingExtraError, RetryableError
from edgevib.extras import require


def test_error_message_names_component_value_and_fix() -> None:
    e = ConfigError("agent.window", "window=-1", "use a positive number of samples")
    assert str(e) == "agent.window: window=-1; fix: use a positive number of samples"
    assert isinstance(e, FatalError) and not e.retryable
    assert RetryableError("broker", "connection refused").retryable


def test_require_names_the_install_line() -> None:
    assert require("json", extra="edge", feature="x").dumps([1]) == "[1]"
    with pytest.raises(MissingExtraError) as exc:
        require("edgevib_no_such_mod", extra="train", feature="CNN training")
    assert "pip install 'edgevib[train]'" in str(exc.value)
    assert exc.value.extra == "train"
