"""The one exception type for user-facing errors: the CLIs print its message, never a traceback."""


class KeepError(Exception):
    """A problem the user can fix (a missing file, a bad config key, unavailable weights, ...)."""


class WeightsUnavailable(KeepError):
    """Pretrained weights are neither on disk nor downloadable here."""


class Interrupted(KeyboardInterrupt):
    """A stop asked for from outside: Ctrl-C (SIGINT) or SIGTERM, which docker, systemd, Slurm and Kubernetes
    send. Handled as Ctrl-C: the run removes what it had not finished and ends with exit status 130; the
    message (printed after `interrupted: `) says what was kept, if anything."""
