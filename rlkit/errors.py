"""User-facing errors: one line that names the problem and the fix."""


class RLKitError(Exception):
    """An error caused by user input (bad env id, bad option, corrupt file...).

    The CLI prints ``rlkit: error: <message>`` and exits with status 2, without a traceback.
    """


def missing_extra(package: str, extra: str) -> RLKitError:
    """The error for an optional dependency that is not installed."""
    return RLKitError(f"{package} is not installed; install the extra with: pip install 'rlkit[{extra}]'")
