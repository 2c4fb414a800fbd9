"""User-facing errors: one line that names the problem and the fix."""


class RLKitError(Exception):
    """An error caused by user input (bad env id, bad option, corrupt file...).

    The CLI prints ``rlkit: error: <message>`` and exits with status 2, without a traceback.
    """


def missing_extra(package: str, extra: str) -> RLKitError:
    """The error for an optional dependency that is not installed."""
    return RLKitError(f"{package} is not installed; install the extra with: pip install 'rlkit[{extra}]'")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job), raised like Ctrl-C so the same code saves a checkpoint.

    The CLI exits with status 143 (128 + SIGTERM) for it, 130 for Ctrl-C.
    """


class AlreadyFinished(RLKitError):
    """``--resume`` of a run that wrote ``final.json`` and has no steps left: nothing is evaluated or written.

    ``result`` is its final.json; the CLI says "already finished" and exits 0.
    """

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result
