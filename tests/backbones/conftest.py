"""Backbone tests run conv nets on CPU: one intra-op thread avoids oversubscribing small (2-core) CI machines."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
