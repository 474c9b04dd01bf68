import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _one_thread_deterministic():
    # Tiny models: one thread is far faster than several fighting over the cores (measured 150x
    # on a busy 2-core machine). Restored afterwards so other test directories keep their setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)
