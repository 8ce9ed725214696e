"""The lab: benchmarks, profiling and the GPU session of this project (docs/speed.md).

    python -m benchmarks                 # the commands
    python -m benchmarks speed --help    # one command's options

It imports `keep` and is never imported by it; what only a measurement turns (the compiled per-frame
step, group norm in float32 under CUDA autocast, the channels-last layout) lives here, in `common.py`.
Its tests are marked `lab` (`python -m pytest -m lab`).
"""
