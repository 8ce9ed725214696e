import os
from pathlib import Path

# Before torch loads OpenMP: idle threads sleep instead of spinning (as the entry points ask;
# ~3x faster tests on a loaded 2-core machine; keep/threads.py). Tests never touch the network.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KEEP_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (golden case and media) is not beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def golden_state(shared_dir) -> dict[str, torch.Tensor]:
    """The stand-in weights of the released v0.1.0 checkpoint (../shared/golden/make_weights.py), GMFlow
    included; made once per test session (~1 minute, ~640 MB)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_weights", shared_dir / "golden" / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    return make_weights.official_state_dict(shared_dir / "golden" / "keep_v010_manifest.json")


@pytest.fixture
def one_thread():
    """Tiny networks and inputs are latency-bound: one torch thread is several times faster on a shared
    2-core machine (measured ~6x for in-process training), and results are deterministic at any fixed count.
    Test modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The modules whose tests run longest (subprocesses: training, Ray, whole videos), in that order, go first: the
# two xdist workers then share the short tests at the end instead of one of them idling beside a long test
# that started last. Each module stays in one piece, so its module-scoped fixtures are made once.
LONG_FIRST = ("test_train", "test_ray", "test_no_hang", "test_inference", "test_faces", "test_app",
              "test_detector_coverage", "test_today_metrics", "test_footage", "test_golden", "test_runner")  # fmt: skip


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.nodeid.split("::")[0]).stem, len(LONG_FIRST)))
