import os
from pathlib import Path

# Before torch loads OpenMP: idle threads sleep instead of spinning (keep.cli.passive_openmp_waits;
# ~3x faster tests on a loaded 2-core machine, issue 10). Tests never touch the network.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KEEP_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (golden case and media) is not beside the repository")
    return SHARED
