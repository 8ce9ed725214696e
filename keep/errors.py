"""The one exception type for user-facing errors: the CLIs print its message, never a traceback."""


class KeepError(Exception):
    """A problem the user can fix (a missing file, a bad config key, unavailable weights, ...)."""


class WeightsUnavailable(KeepError):
    """Pretrained weights are neither on disk nor downloadable here."""
