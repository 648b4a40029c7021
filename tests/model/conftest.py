import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # the shared 2-core machine: intra-op threads under contention run tiny ops ~50x slower
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
