"""Deploy tests. Those marked ``image`` build and run the container image: minutes of work
and root with podman, so they are deselected (not skipped) unless ``CIGATE_TEST_IMAGE=1``."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: builds and runs the container image (only with CIGATE_TEST_IMAGE=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CIGATE_TEST_IMAGE") == "1":
        return
    deselected = [item for item in items if item.get_closest_marker("image")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("image")]
