"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

from typing import Any

#: The second install step for `imitation` (see the README, "Install"): its metadata pins gymnasium~=0.29 and
#: stable-baselines3~=2.2.1, yet everything rlkit uses from it runs on today's stack, so it goes in without them.
IMITATION_INSTALL = "pip install --no-deps imitation==1.0.1"
IMITATION_WHY_NO_DEPS = ("--no-deps because imitation's metadata pins gymnasium~=0.29 and stable-baselines3~=2.2.1, "
                         "which rlkit's stack replaces; its runtime requirements come with rlkit")


class RLKitError(Exception):
    """An error caused by user input (bad env id, bad option, corrupt file...).

    The CLI prints ``rlkit: error: <message>`` and exits with status 2, without a traceback.
    """


def missing_extra(package: str, extra: str) -> RLKitError:
    """The error for an optional dependency that is not installed."""
    return RLKitError(f"{package} is not installed; install the extra with: pip install 'rlkit[{extra}]'")


def missing_imitation(feature: str) -> RLKitError:
    """The one-line error of a feature that needs `imitation` when it cannot be imported."""
    return RLKitError(f"{feature} needs the `imitation` package, which is not installed; install it with: "
                      f"{IMITATION_INSTALL} ({IMITATION_WHY_NO_DEPS})")


def require_imitation(feature: str) -> Any:
    """Import and return the ``imitation`` package, or raise :func:`missing_imitation` for ``feature``.

    Call it before the first ``from imitation... import`` of a feature, so a user without imitation gets
    the install command instead of a ModuleNotFoundError traceback. Only a missing ``imitation`` itself is
    translated: an import error inside an installed imitation (a broken dependency) propagates unchanged.
    """
    try:
        import imitation
    except ModuleNotFoundError as e:
        if e.name != "imitation":
            raise
        raise missing_imitation(feature) from None
    return imitation


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
