"""Shared test fixtures.

Real sample files live in ``../shared/data`` beside the checkout (never copied into the
project). On a user's machine they are absent and the tests that need them skip with a
reason; with ``CLEMLAB_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``) a missing file fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("CLEMLAB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def _require_shared() -> bool:
    return os.environ.get("CLEMLAB_REQUIRE_SHARED_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared_data():
    """Return a function ``path -> Path`` for files under ``../shared/data``.

    Skips the test (or fails, under ``CLEMLAB_REQUIRE_SHARED_DATA=1``) when a file is missing.
    """

    def get(relpath: str) -> Path:
        p = SHARED_DATA / relpath
        if not p.exists():
            msg = f"shared sample file {p} is not present (it sits beside the checkout in CI)"
            if _require_shared():
                pytest.fail(msg + "; CLEMLAB_REQUIRE_SHARED_DATA=1 demands it")
            pytest.skip(msg)
        return p

    return get
