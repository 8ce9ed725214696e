import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network.
os.environ.setdefault("KEEP_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (golden case and media) is not beside the repository")
    return SHARED
