import os

import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated: it must be set before anything
# (diffusers and transformers included) imports triton, so here, in the root conftest
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# the ops under test are small: one thread is faster and leaves the other core free
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

