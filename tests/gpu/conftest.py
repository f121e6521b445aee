"""Shared by the CUDA-path tests: the devices to run on (the CPU always; CUDA marked ``cuda``)."""

from __future__ import annotations

import pytest

#: parametrize a test over these: the CPU version runs everywhere, the CUDA one only where a GPU is present
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
