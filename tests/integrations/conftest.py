import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# Tiny models: one thread is much faster than several fighting over the cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
