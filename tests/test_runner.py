"""The pipeline's stage interface and its one runner (keep/pipeline/runner.py): toy stages around the real decode stage,
run inline, in threads and in processes, grouped as on a CPU and as on a GPU; the same frames come out, in
order, and a failure anywhere is one error."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from keep.errors import KeepError
from keep.image import write_image
from keep.pipeline.decode import DecodeSpec
from keep.pipeline.faces import FacesSpec
from keep.pipeline.items import FramePool, FrameRef, Job
from keep.pipeline.options import RunOptions
from keep.pipeline.runner import Runner
from keep.pipeline.stage import Chain, FreeSlots, Stage
from keep.video import open_input

FRAMES = 13  # not a multiple of the hold: finish() has items left to pass on


class Tint(Stage):
    """Adds `amount` to the frame in its slot (in place, as the decoder wrote it) and passes the frame on."""

    def __init__(self, amount: int):
        super().__init__()
        self.amount = amount

    def start(self, job: Job, slots) -> None:
        self.pool = job.pool

    def push(self, frame: FrameRef) -> list[FrameRef]:
        with self.timer("tint"):
            rgb = self.pool[frame.slot]
            rgb += np.uint8(self.amount)
        return [frame]


class Hold(Stage):
    """Keeps the last `count` items (as the tracker's look-ahead and the restore window do)."""

    def __init__(self, count: int, fail_at: int | None = None):
        super().__init__()
        self.count, self.held, self.fail_at = count, count, fail_at

    def start(self, job: Job, slots) -> None:
        self.items = []

    def push(self, item) -> list:
        if item.index == self.fail_at:
            raise KeepError(f"frame {item.index} cannot be held")
        self.items.append(item)
        return [self.items.pop(0)] if len(self.items) > self.count else []

    def finish(self) -> list:
        out, self.items = self.items, []
        return out


class Record(Stage):
    """The sink: a checksum of every frame it receives, in the order received; frees the slot."""

    def start(self, job: Job, slots) -> None:
        self.pool, self.release, self.seen = job.pool, slots.release, []

    def push(self, frame: FrameRef) -> list:
        self.seen.append((frame.index, hashlib.sha256(self.pool[frame.slot].tobytes()).hexdigest()[:12]))
        self.release(frame.slot)
        return []

    def stats(self) -> dict:
        return {"seen": self.seen}


@dataclass(frozen=True)
class ToySpec:
    """A picklable recipe for a toy stage, as the pipeline's specs are for its stages."""

    kind: str
    value: int = 0
    fail_at: int | None = None

    def build(self) -> Stage:
        return {"tint": lambda: Tint(self.value), "hold": lambda: Hold(self.value, self.fail_at), "record": Record}[
            self.kind
        ]()


DECODE, TINT, HOLD, RECORD = DecodeSpec(), ToySpec("tint", 7), ToySpec("hold", 3), ToySpec("record")
GROUPINGS = {  # as keep.pipeline.options.STAGE_GROUPS: the middle stage beside the source (CPU) or in main (GPU)
    "cpu": [("front", [DECODE, TINT]), ("main", [HOLD]), ("back", [RECORD])],
    "gpu": [("front", [DECODE]), ("main", [TINT, HOLD]), ("back", [RECORD])],
}


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy_frames")
    rng = np.random.default_rng(0)
    for index in range(FRAMES):
        write_image(folder / f"{index:03d}.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return folder


def expected(folder: Path) -> list[tuple[int, str]]:
    return [(f.index, hashlib.sha256(f.rgb + np.uint8(7)).hexdigest()[:12]) for f in open_input(folder)]


def run_input(runner: Runner, folder: Path, progress=lambda count: None) -> dict:
    """One input through `runner`, as `Pipeline.restore` sends it: a pool sized by the runner, the main
    process's reader handed to the decode stage where it runs in this process."""
    reader = open_input(folder)
    pool = FramePool(runner.pool_size(RunOptions()), reader.height, reader.width, shared=runner.mode == "processes")
    job = Job(folder, pool, None, RunOptions(), reader if runner.source_in_process else None)
    return runner.run(job, progress)


@pytest.mark.parametrize("grouping", ["cpu", "gpu"])
@pytest.mark.parametrize("mode", ["off", "threads", "processes"])
def test_every_mode_and_grouping_passes_every_frame_in_order(mode, grouping, frames_folder):
    runner = Runner(GROUPINGS[grouping], mode=mode, window=4, device="cpu")
    try:
        counted = []
        stats = run_input(runner, frames_folder, counted.append)
        assert stats["seen"] == expected(frames_folder)  # every frame, in order, tinted once
        assert sum(counted) == FRAMES  # progress counts what the main group passes on
        assert stats["stopped"] is None and stats["timings"]["tint"] > 0 and stats["timings"]["decode"] > 0
        if mode != "off":  # the waits of every group are counted
            assert {name.split(":")[0] for name in stats["timings"] if name.startswith("wait ")} >= {"wait main"}
        again = run_input(runner, frames_folder)  # the workers serve one input after another
        assert again["seen"] == stats["seen"]
    finally:
        runner.close()


@pytest.mark.parametrize("mode", ["off", "threads", "processes"])
def test_a_failing_stage_is_one_error_and_stops_the_workers(mode, frames_folder):
    failing = [("front", [DECODE, TINT]), ("main", [HOLD]), ("back", [ToySpec("hold", 1, fail_at=6), RECORD])]
    runner = Runner(failing, mode=mode, window=4, device="cpu")
    try:
        with pytest.raises(KeepError, match="frame 6 cannot be held"):
            run_input(runner, frames_folder)
        assert runner.stopped == (mode != "off")  # overlapped: the workers are gone, the runner is not reused
        assert all(not worker.is_alive() for worker in runner.workers.values())
    finally:
        runner.close()


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_worker_processes_are_forked_from_one_server_that_imported_torch(frames_folder):
    """Two runners in turn (as after a failed input or a cancel): every worker of both is a child of one
    fork server, which had torch loaded before it forked them, so no worker imports torch itself."""
    runners = [Runner(GROUPINGS["cpu"], mode="processes", window=4, device="cpu") for _ in range(2)]
    try:
        for runner in runners:
            assert run_input(runner, frames_folder)["seen"] == expected(frames_folder)
        workers = [worker.pid for runner in runners for worker in runner.workers.values()]
        (server,) = {int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in workers}
        assert len(workers) == 4 and b"multiprocessing.forkserver" in Path(f"/proc/{server}/cmdline").read_bytes()
        assert "libtorch_cpu.so" in Path(f"/proc/{server}/maps").read_text()
    finally:
        for runner in runners:
            runner.close()


def test_pool_sizes_cover_what_the_stages_and_queues_hold():
    overlapped = Runner(GROUPINGS["cpu"], mode="threads", window=4, device="cpu")
    inline = Runner(GROUPINGS["cpu"], mode="off", window=4, device="cpu")
    try:
        assert inline.held == overlapped.held == 3  # the hold stage's
        assert inline.pool_size(RunOptions()) == 3 + 2
        assert overlapped.pool_size(RunOptions()) == 3 + (2 * 4 + 8) + 2 * 4 + 3  # Q1 and Q2 as docs/inference.md says
    finally:
        overlapped.close()
    # the faces stage holds its smoother's look-ahead too, which each run's tracker settings size
    faces = FacesSpec(detector="dlib", device="cpu", detect_size=0)
    assert faces.run_held(RunOptions()) == 1 + 5 + 5  # sigma 1.5: radius 5; max_gap 5
    assert faces.run_held(RunOptions(max_gap=2, smooth_sigma=0, min_track=9)) == 8  # min_track - 1
    assert faces.run_held(RunOptions(has_aligned=True)) == 0


def test_a_chain_passes_each_output_on_at_once_and_finishes_in_order():
    """Depth first: an item leaves the chain as soon as every stage has passed it; finish() flushes each stage
    through the stages after it."""
    job = Job(Path("none"), FramePool(4, 2, 2), None, RunOptions())
    chain = Chain([Hold(2), Hold(1)])
    chain.start(job, FreeSlots(4))
    out: list[int] = []
    pushed = []
    for index in range(6):
        chain.push(FrameRef(index, 0, index), lambda item: out.append(item.index))
        pushed.append(list(out))
    assert pushed == [[], [], [], [0], [0, 1], [0, 1, 2]]  # held: 2 + 1
    chain.finish(lambda item: out.append(item.index))
    assert out == [0, 1, 2, 3, 4, 5]
    assert chain.held == 3 and chain.stats()["timings"] == {}


def test_the_stage_groups_follow_the_device():
    from keep.pipeline import STAGE_GROUPS, PipelineOptions
    from keep.pipeline.options import stage_groups

    assert stage_groups(PipelineOptions(device="cpu")) == STAGE_GROUPS["cpu"]
    assert stage_groups(PipelineOptions(device="cuda:0")) == STAGE_GROUPS["gpu"]
    assert stage_groups(PipelineOptions(device="cpu", stage_groups="gpu")) == STAGE_GROUPS["gpu"]
    for groups in STAGE_GROUPS.values():  # every stage once, in a frame's order; the network in the main process
        assert [stage for _, stages in groups for stage in stages] == [
            "decode",
            "faces",
            "restore",
            "compose",
            "encode",
        ]
        assert "restore" in dict(groups)["main"]
    assert "faces" in dict(STAGE_GROUPS["gpu"])["main"]  # a GPU: detection batched beside the network
