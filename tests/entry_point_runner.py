"""Run entry points as separate processes without paying torch's import for each (tests/test_entry_points.py).

    python tests/entry_point_runner.py      # then one JSON case per line on stdin, one JSON result per line out

This interpreter imports the heavy modules once (torch, numpy, OpenCV, PyAV, Gradio, the project) without
running any torch operation, so no OpenMP thread exists yet; then for every case it forks a child
that runs the script as `python script.py args...` would: `sys.argv`, `sys.path[0]` = the script's
folder, `__name__ == "__main__"`, the case's working folder and environment, stdout and stderr to
files, the exit status of `sys.exit` (an uncaught exception: traceback on stderr, status 1, as the
interpreter does). A case gets `timeout` seconds (SIGALRM). One case costs milliseconds instead of
the ~3 s a fresh interpreter spends importing torch on the shared 2-core machine.

Case: {"script", "args", "cwd", "env", "stdout", "stderr", "timeout"}; result: {"rc"}.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import traceback


def run_case(case: dict) -> None:
    """In the forked child: become `python script args...`; never returns."""
    code = 1
    try:
        signal.alarm(int(case["timeout"]))
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        for fd, path in ((1, case["stdout"]), (2, case["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the child exits with os._exit
        sys.argv = [case["script"], *case["args"]]
        sys.path.insert(0, os.path.dirname(os.path.abspath(case["script"])))
        try:
            runpy.run_path(case["script"], run_name="__main__")
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import av  # noqa: F401
    import cv2  # noqa: F401
    import gradio  # noqa: F401 - app.py's (4 s of each app case otherwise)
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    import yaml  # noqa: F401

    import keep  # noqa: F401
    import keep.data  # noqa: F401
    import keep.evaluation  # noqa: F401
    import keep.pipeline  # noqa: F401
    import keep.train  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_case(case)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
