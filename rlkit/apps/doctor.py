"""``rlkit doctor`` and ``rlkit --version``: what is installed, what works, and what to install for the rest.

``rlkit doctor`` lists the versions of the whole stack (from the installed distributions' metadata, so
listing imports nothing), then checks each optional feature by really using it: Atari makes
``ALE/Pong-v5``, MuJoCo makes ``HalfCheetah-v5``, imitation imports the modules rlkit uses, and so on.
For every package or feature that is missing or broken it prints the exact install command. The
packages and ranges come from rlkit's own metadata (pyproject.toml), so the report follows the lock.

Exit status: 0 when every core package is installed in its range and every core feature works; 1
otherwise. A missing extra (atari, mujoco, box2d, ray, dev) is reported with its command but is not a
failure, nor is a feature this machine cannot offer whatever is installed (the keyboard recorder without a
display: "unavailable").

``rlkit doctor --json`` prints one object; this schema is stable (fields may be added, never renamed)::

    {
      "schema": 1,
      "rlkit": "0.1.0",
      "python": "3.11.7",
      "python_executable": "/path/to/python",   # install commands are for its pip: python -m pip
      "platform": "Linux-6.8-x86_64-with-glibc2.39",
      "torch_cuda": false,                      # torch.cuda.is_available(), null when torch is missing
      "checkout": "/path/to/repo" | null,       # an editable install from a checkout with constraints.txt:
                                                # its install commands use -c constraints.txt, run there
      "ok": true,                               # the exit status above, as a boolean
      "packages": [                             # key stack first, then rlkit's other requirements
        {"name": "gymnasium",                   # distribution name
         "version": "1.4.0" | null,             # installed version, null when missing
         "required": ">=1.2,<1.5" | null,       # the range rlkit declares ("==1.0.1" for imitation)
         "group": "core" | "imitation" | "atari" | "mujoco" | "ray" | "dev" | "python",
         "status": "ok" | "missing" | "out of range",
         "install": "pip install ..." | null},  # null when status is "ok"
        ...
      ],
      "features": [
        {"name": "atari" | "mujoco" | "box2d" | "minari" | "ray" | "imitation" | "video" | "keyboard",
         "core": false,                         # core features count for "ok"; extras do not
         "usable": true,
         "status": "ok" | "missing" | "broken" | "unavailable",
                                                # missing: its package is not installed; broken: installed,
                                                # fails; unavailable: installed, but this machine lacks what
                                                # no install gives (a display); does not count against "ok"
         "detail": "ALE/Pong-v5 runs (ale-py 0.12.1 ships the ROMs)",   # or the error, one line
         "install": "pip install ..." | null},
        ...
      ]
    }

``imitation`` 1.0.1 is installed in a second step, ``pip install --no-deps imitation==1.0.1``: its
metadata pins gymnasium~=0.29 and stable-baselines3~=2.2.1, which rlkit ignores on purpose (everything
rlkit uses from imitation runs on today's stack). So ``pip check`` reports those two pins, and the doctor
does not count them as a problem.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rlkit import __version__
from rlkit.errors import IMITATION_INSTALL, IMITATION_WHY_NO_DEPS

SCHEMA_VERSION = 1
IMITATION_VERSION = "1.0.1"
# The stack users ask about first, in this order; rlkit's other requirements follow in pyproject's order.
KEY_STACK = ["torch", "gymnasium", "numpy", "stable-baselines3", "imitation", "minari", "ale-py", "mujoco", "ray",
             "optuna", "tensorboard"]
VERSION_LINE = ["torch", "gymnasium", "numpy", "stable-baselines3", "imitation", "minari"]


@dataclass
class PackageRow:
    name: str
    version: str | None
    required: str | None
    group: str
    status: str
    install: str | None


@dataclass
class FeatureRow:
    name: str
    core: bool
    usable: bool
    status: str
    detail: str
    install: str | None


class Missing(Exception):
    """A feature's own package is not installed (as opposed to installed but failing)."""


class Unavailable(Exception):
    """A feature's packages work, but this machine lacks something no install provides (a display)."""


# ---------------------------------------------------------------------------------------------
# Versions (metadata only: nothing is imported)
# ---------------------------------------------------------------------------------------------

def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def version_line() -> str:
    """``rlkit --version``: rlkit's version and the key stack's, on one line."""
    parts = [f"python {platform.python_version()}"]
    parts += [f"{name} {installed_version(name) or 'missing'}" for name in VERSION_LINE]
    return f"rlkit {__version__} ({', '.join(parts)})"


def checkout_root() -> Path | None:
    """The repository of an editable install (it has constraints.txt beside pyproject.toml), else None."""
    root = Path(__file__).resolve().parents[2]  # rlkit/apps/doctor.py
    return root if (root / "constraints.txt").is_file() and (root / "pyproject.toml").is_file() else None


def _requirements() -> list[tuple[str, str, str]]:
    """(name, specifier, group) of rlkit's declared requirements, from its installed metadata."""
    from packaging.requirements import Requirement  # packaging comes with matplotlib, a core requirement

    try:
        meta, requires = metadata.metadata("rlkit"), metadata.requires("rlkit") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed: no declared ranges
        return [(name, "", "core") for name in KEY_STACK if name != "imitation"]
    extras = meta.get_all("Provides-Extra") or []
    found = []
    for text in requires:
        req = Requirement(text)
        group = "core"
        if req.marker is not None:
            group = next((extra for extra in extras if req.marker.evaluate({"extra": extra})), "core")
        found.append((req.name, _lower_bound_first(req.specifier), group))
    return found


_OPERATOR_ORDER = ["===", "==", "~=", ">=", ">", "!=", "<=", "<"]


def _lower_bound_first(specifier: Any) -> str:
    """``>=1.2,<1.5`` rather than packaging's sorted ``<1.5,>=1.2``: ranges read low to high."""
    return ",".join(str(s) for s in sorted(specifier, key=lambda s: _OPERATOR_ORDER.index(s.operator)))


def install_command(name: str, required: str | None, group: str, root: Path | None) -> str:
    """The command that installs package ``name`` (or its extra) the way rlkit is installed here."""
    constraints = "-c constraints.txt " if root else ""
    if group == "imitation":
        return IMITATION_INSTALL
    if group == "python":
        return "install Python 3.10 or newer and reinstall rlkit with it"
    if group != "core":
        return f"pip install {constraints}-e '.[{group}]'" if root else f"pip install 'rlkit[{group}]'"
    return f"pip install {constraints}'{name}{required or ''}'"


def _in_range(version: str, required: str | None) -> bool:
    if not required:
        return True
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(required).contains(version, prereleases=True)


def package_rows(root: Path | None = None) -> list[PackageRow]:
    """One row per package of the stack: Python, rlkit, its requirements (all extras) and imitation."""
    reqs = _requirements()
    reqs.append(("imitation", f"=={IMITATION_VERSION}", "imitation"))
    reqs.sort(key=lambda r: KEY_STACK.index(r[0]) if r[0] in KEY_STACK else len(KEY_STACK))  # stable sort
    python_req = metadata.metadata("rlkit").get("Requires-Python") if installed_version("rlkit") else None
    rows = [PackageRow("python", platform.python_version(), python_req, "python", "ok", None),
            PackageRow("rlkit", installed_version("rlkit") or __version__, None, "core", "ok", None)]
    seen = set()
    for name, required, group in reqs:
        if name in seen:  # the same package under two extras is listed once
            continue
        seen.add(name)
        version = installed_version(name)
        if version is None:
            status = "missing"
        elif not _in_range(version, required):
            status = "out of range"
        else:
            status = "ok"
        rows.append(PackageRow(name, version, required or None, group, status,
                               None if status == "ok" else install_command(name, required, group, root)))
    return rows


# ---------------------------------------------------------------------------------------------
# Features (each is really used)
# ---------------------------------------------------------------------------------------------

def _import(module: str) -> Any:
    """Import ``module``; its absence (not a failure inside it) becomes :class:`Missing`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.split(".")[0] == e.name.split(".")[0]:
            raise Missing(f"{module} is not installed") from None
        raise


def _run_env(env_id: str) -> None:
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
    finally:
        env.close()


def check_atari() -> str:
    import gymnasium as gym

    ale_py = _import("ale_py")
    gym.register_envs(ale_py)
    _run_env("ALE/Pong-v5")
    return f"ALE/Pong-v5 runs (ale-py {ale_py.__version__} ships the ROMs)"


def check_mujoco() -> str:
    mujoco = _import("mujoco")
    _run_env("HalfCheetah-v5")
    return f"HalfCheetah-v5 runs (mujoco {mujoco.__version__})"


def check_box2d() -> str:
    _import("Box2D")
    _run_env("LunarLander-v3")
    return f"LunarLander-v3 runs (box2d {installed_version('box2d') or '?'})"


def check_minari() -> str:
    minari = _import("minari")
    if not hasattr(minari, "create_dataset_from_buffers"):
        raise RuntimeError(f"minari {minari.__version__} has no create_dataset_from_buffers; rlkit needs 0.5.x")
    return f"minari {minari.__version__}: rlkit demos convert --to/--from minari"


def check_ray() -> str:
    ray = _import("ray")
    return f"ray {ray.__version__}: rlkit reproduce --backend ray"


def check_imitation() -> str:
    imitation = _import("imitation")
    for module in ("imitation.algorithms.adversarial.gail", "imitation.algorithms.adversarial.airl",
                   "imitation.algorithms.preference_comparisons", "imitation.data.serialize",
                   "imitation.data.rollout"):
        importlib.import_module(module)
    return (f"imitation {imitation.__version__}: GAIL, AIRL, preferences, demos conversion; its metadata pins "
            f"gymnasium~=0.29 and stable-baselines3~=2.2.1, ignored on purpose (installed --no-deps; "
            f"`pip check` reporting those two pins is expected)")


def check_video() -> str:
    imageio_ffmpeg = _import("imageio_ffmpeg")
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    return f"mp4 via imageio-ffmpeg {imageio_ffmpeg.__version__} ({Path(exe).name})"


def check_keyboard() -> str:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame prints a banner to stdout on import
    pygame = _import("pygame")
    from rlkit.demos.human import no_display_reason

    reason = no_display_reason(pygame)
    pygame.display.quit()  # the check only probed the video driver; it opens no window
    if reason is not None:
        raise Unavailable(f"pygame {pygame.version.ver} works, but --policy human refuses here: {reason}")
    return f"pygame {pygame.version.ver}, display driver found: rlkit demos record --policy human"


# name -> (check, core?, package whose install command fixes it, its group)
FEATURES: dict[str, tuple[Callable[[], str], bool, str, str]] = {
    "imitation": (check_imitation, True, "imitation", "imitation"),
    "minari": (check_minari, True, "minari", "core"),
    "video": (check_video, True, "imageio-ffmpeg", "core"),
    "keyboard": (check_keyboard, True, "pygame-ce", "core"),
    "atari": (check_atari, False, "ale-py", "atari"),
    "mujoco": (check_mujoco, False, "mujoco", "mujoco"),
    "box2d": (check_box2d, False, "box2d", "box2d"),
    "ray": (check_ray, False, "ray", "ray"),
}


@contextlib.contextmanager
def _isolated_check() -> Iterator[None]:
    """Run a check in a scratch working directory with its native output and warnings silenced.

    ALE prints a banner and MuJoCo its compiler notes from C, straight to the file descriptors; MuJoCo also
    appends those notes to ``MUJOCO_LOG.TXT`` in the working directory, which must not appear in the user's.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    cwd = os.getcwd()
    with tempfile.TemporaryFile() as sink, tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(cwd)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def feature_rows(names: list[str] | None = None, root: Path | None = None) -> list[FeatureRow]:
    """Check the named features (default: all of :data:`FEATURES`)."""
    required = {name: (spec, group) for name, spec, group in _requirements()}
    rows = []
    for name in names or list(FEATURES):
        check, core, package, group = FEATURES[name]
        spec = required.get(package, (f"=={IMITATION_VERSION}", group))[0]
        install = install_command(package, spec, group, root)
        try:
            with _isolated_check():
                detail = check()
            rows.append(FeatureRow(name, core, True, "ok", detail, None))
        except Missing:
            rows.append(FeatureRow(name, core, False, "missing", f"{package} is not installed", install))
        except Unavailable as e:
            rows.append(FeatureRow(name, core, False, "unavailable", str(e), None))
        except Exception as e:  # a broken install can fail in any way; report it, keep checking the rest
            rows.append(FeatureRow(name, core, False, "broken", _one_line(e), install))
    if "imitation" in (names or FEATURES):  # say why --no-deps next to the command
        for row in rows:
            if row.name == "imitation" and row.install:
                row.detail += f"; {IMITATION_WHY_NO_DEPS}"
    return rows


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def _torch_cuda() -> bool | None:
    if installed_version("torch") is None:
        return None
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch shows up in the package rows; the header just says unknown
        return None


def report(features: list[str] | None = None) -> dict[str, Any]:
    """The whole doctor report as the JSON object documented in the module docstring."""
    root = checkout_root()
    packages = package_rows(root)
    feats = feature_rows(features, root)
    ok = all(p.status == "ok" for p in packages if p.group in ("core", "imitation", "python")) \
        and all(f.usable or f.status == "unavailable" for f in feats if f.core)
    return {"schema": SCHEMA_VERSION, "rlkit": __version__, "python": platform.python_version(),
            "python_executable": sys.executable, "platform": platform.platform(), "torch_cuda": _torch_cuda(),
            "checkout": str(root) if root else None, "ok": ok,
            "packages": [asdict(p) for p in packages], "features": [asdict(f) for f in feats]}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    return ["  ".join([*(str(c).ljust(w) for c, w in zip(r, widths)), str(r[-1])]).rstrip() for r in [header, *rows]]


def format_report(rep: dict[str, Any]) -> str:
    """The report as readable tables, then the commands that fix what is missing."""
    cuda = {True: "CUDA available", False: "no CUDA (CPU)", None: "torch not importable"}[rep["torch_cuda"]]
    lines = [f"rlkit {rep['rlkit']} on Python {rep['python']} ({rep['python_executable']}), {cuda}", ""]
    lines += _table(["package", "version", "required", "group", "status"],
                    [[p["name"], p["version"] or "-", p["required"] or "", p["group"], p["status"]]
                     for p in rep["packages"]])
    lines.append("")
    lines += _table(["feature", "status", "detail"],
                    [[f["name"] + ("" if f["core"] else " (extra)"), f["status"], f["detail"]]
                     for f in rep["features"]])
    fixes = [(p["name"], p["install"]) for p in rep["packages"] if p["install"]]
    fixes += [(f["name"], f["install"]) for f in rep["features"] if f["install"]]
    commands: dict[str, list[str]] = {}
    for name, command in fixes:
        commands.setdefault(command, []).append(name)
    lines.append("")
    if commands:
        where = f"run in {rep['checkout']}; " if rep["checkout"] else ""
        lines.append(f"To install what is missing ({where}pip is `{rep['python_executable']} -m pip`):")
        lines += [f"  {command}    # {', '.join(dict.fromkeys(names))}" for command, names in commands.items()]
    else:
        lines.append("Everything is installed and works.")
    lines.append("OK: the core works." if rep["ok"] else "NOT OK: a core package or feature is missing (above).")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> None:
    """Register ``rlkit doctor`` on the CLI's subparsers."""
    doctor = subparsers.add_parser("doctor", help="versions of the stack, usable extras, and how to install the rest",
                                   description=(__doc__ or "").split("\n\n")[1].replace("\n", " ").replace("``", "`"))
    doctor.add_argument("--json", action="store_true", help="print the report as JSON (schema in rlkit/apps/doctor.py)")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: Any) -> int:
    rep = report()
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0 if rep["ok"] else 1
