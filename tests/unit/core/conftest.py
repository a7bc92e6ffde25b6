from __future__ import annotations

import pytest

from mailslot.testing import CoreHarness


@pytest.fixture
def harness() -> CoreHarness:
    """A core broker on in-memory stores and a fake clock (mailslot.testing.CoreHarness)."""
    return CoreHarness()
