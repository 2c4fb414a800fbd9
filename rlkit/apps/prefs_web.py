"""Human preferences in the browser: the answer store, the label queue, the local web server, the clips.

Christiano et al. (2017) asked people which of two short clips of an agent was better. This module is
the person's side of ``rlkit train preference --set rater=web``: each round, the pairs of trajectory
fragments that imitation's ``PreferenceComparisons`` queries are rendered to short H.264 clips, served
on a local page (two clips side by side, looping in sync; keys ArrowLeft / ArrowRight / ``=`` / ``s``),
and every answer is written to the run directory before the page hears back. The imitation side (the
gatherer, the fragments' origins, offline reward training) is :mod:`rlkit.apps.preference_web`.

Layout under ``RUN_DIR/prefs/`` (format 1)::

    meta.json        written once, atomically: format, env id and kwargs, spaces, fragment length, fps
    rounds/NNNN.npz  one round's fragments: obs, acts, true rewards (never served), and per fragment
                     the actions of its episode up to the fragment's end (to replay it for the clip)
    rounds.jsonl     one line per round, appended after its .npz: the pairs (ids, sides, fragments'
                     reset seeds and steps). This line is the commit point of a round.
    answers.jsonl    one line per answer: pair id, round, fragments' seeds and steps, answer, the
                     preference it means, rater, time. The line is the commit point of a label.
    videos/ID-left.mp4, ID-right.mp4   derived; re-rendered from the round file when missing

Commit discipline (as in :mod:`rlkit.demos.dataset`): a line is appended with one ``write(2)`` on an
``O_APPEND`` descriptor; a line cut by a crash has no trailing newline and is ignored by readers and
trimmed by the next writer (which holds the store's lock, so no live writer's bytes are trimmed).
Answers are also fsynced, one by one: at human speed (seconds per label) 6 ms per label is free,
and so a label survives even a power cut. The page is answered only after the line is on disk, so a
killed trainer or server loses no answer that a rater saw acknowledged.

Answers: ``left`` / ``right`` = that clip is better, ``equal`` = preference 0.5, ``skip`` = can't tell:
the pair is resolved but not used for training (the paper: "if the human indicates that the segments
are incomparable, then the comparison is not included in the database"). Which fragment is shown on the
left is drawn at random per pair (stored), so a rater's side bias does not become a reward bias.
Several raters get different pairs: a pair is leased to one rater for ``lease_s`` seconds; a reload
gives the same pair back; an answer after the lease ran out is still stored, but only a pair's first
answer counts (later ones are marked ``duplicate``).

Why the standard library's ``http.server`` (``ThreadingHTTPServer``): the traffic is a handful of small
JSON requests and a few 100 kB clips per minute from a few raters, which a thread per connection
serves easily; rlkit gains no dependency, and nothing outside the machine is needed. What it lacks for
the open internet (hardening, TLS) is why it binds to 127.0.0.1 by default and, bound anywhere else,
answers only requests carrying the access token (generated unless given, compared in constant time,
checked on every request). Bound to loopback without a token it checks the ``Host`` header instead,
so a web page in the rater's browser cannot reach it through DNS rebinding.

Any other web page open in the rater's browser can still *send* requests to 127.0.0.1 (it cannot read
the replies). So every state-changing request (taking a pair, answering one) must carry the server's
per-start secret in the ``X-RLKit-Secret`` header: the secret is written into the page the server
renders, which another site cannot read, and a custom header makes a cross-site ``fetch`` need a CORS
preflight that this server never grants. A request whose ``Origin`` is not this server is refused
too, and pair ids carry 64 random bits. Request bodies are capped in size and JSON depth and read
with a timeout; anything malformed gets a 4xx and one log line, and an answer is stored only from a
complete, valid request.

Trust (docs/reliability.md, "Loading never executes code"): a copied run's files are data. The env id in
``meta.json`` is imported only when it names no module (``pkg.module:Env-v0``) or the user names the same id
(``--env``); every file written, appended to or trimmed in place must be a regular file inside the run
(:mod:`rlkit.safe_files`), and
the run's files are read only as regular files inside it (a planted symlink is refused, not followed).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import hmac
import html
import http.cookies
import io
import json
import os
import re
import secrets
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.checkpoint import atomic_write_bytes, atomic_write_text
from rlkit.config import imports_code
from rlkit.errors import RLKitError
from rlkit.safe_files import check_inside, disk_full_error, is_disk_full, open_in_home

FORMAT = "rlkit-prefs"
FORMAT_VERSION = 1
PREFS_DIR = "prefs"
ANSWERS = ("left", "right", "equal", "skip")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_RATER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# round-index-in-round, then 64 random bits (older stores have ids without them: still read and served)
_PAIR_RE = re.compile(r"^[0-9]{4}-[0-9]{4}(-[0-9a-f]{16})?$")
SECRET_HEADER = "X-RLKit-Secret"
MAX_BODY_BYTES = 4096        # an answer is ~100 bytes
MAX_JSON_DEPTH = 4           # an answer is one flat object; json.loads recurses per level
PROMPT_FALLBACK = ("No task description was given (the run's web_prompt is empty): prefer the clip whose "
                   "behaviour better achieves what the environment's task asks for.")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# The store: rounds of pairs, answers, clips, all under RUN_DIR/prefs
# ---------------------------------------------------------------------------------------------

def read_run_file(path: Path, home: Path) -> bytes | None:
    """The bytes of one of a run's own files, or None when it is missing.

    Refused in one line unless it is a regular file inside ``home`` reached through no symlink: a copied run
    could otherwise point ``answers.jsonl`` at a file outside it, or at ``/dev/zero`` (a read that never ends).
    """
    check_inside(path, home)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # swapped in after the check
            raise RLKitError(f"{path} is a symbolic link; rlkit reads only plain files inside {home}") from None
        raise RLKitError(f"cannot read {path} ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RLKitError(f"{path} is not a regular file; rlkit reads only plain files inside {home}")
        return f.read()


def _read_lines(path: Path, home: Path, problem: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """The committed JSON objects of ``path`` (a last line without newline is a crash's torn write).

    ``problem(row)`` says what is wrong with a row whose shape the store cannot use, or None.
    """
    data = read_run_file(path, home) or b""
    end = data.rfind(b"\n") + 1
    rows = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        wrong = "is not a JSON object" if not isinstance(row, dict) else problem(row)
        if wrong:
            raise RLKitError(f"{path}: line {number} {wrong} (the file was edited or damaged); fix or remove "
                             "that line")
        rows.append(row)
    return rows


def _trim_torn_tail(path: Path, home: Path) -> None:
    """Cut an uncommitted last line (no newline) left by a killed writer; committed lines are untouched.

    The file is opened through :func:`open_in_home`, so a symlink planted in its place is refused rather than
    followed: the trim must never cut a file outside the run.
    """
    if not os.path.lexists(path):
        return
    fd = open_in_home(path, home, os.O_RDWR)
    try:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        end = data.rfind(b"\n") + 1
        if end != len(data):
            os.ftruncate(fd, end)
    finally:
        os.close(fd)


def _append_line(path: Path, home: Path, record: dict[str, Any], fsync: bool) -> None:
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = open_in_home(path, home, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        try:
            written = os.write(fd, line)
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(path) from None
            raise
        if written != len(line):  # regular files write whole; a short write is a full disk
            raise RLKitError(f"{path}: short write (disk full?); the last line is incomplete and will be ignored")
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def preference_of(answer: str, left_fragment: int) -> float | None:
    """P(fragment 1 is better) that an answer about the clips as shown means; None for ``skip``.

    Args:
        answer: one of ``left``, ``right``, ``equal``, ``skip`` (about the clips as the rater saw them).
        left_fragment: 1 or 2, the fragment that was shown on the left.
    """
    if answer == "skip":
        return None
    if answer == "equal":
        return 0.5
    left_better = answer == "left"
    return float(left_better if left_fragment == 1 else not left_better)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _meta_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not _is_int(meta.get("version")):
        return f"is not an rlkit preference store of format <= {FORMAT_VERSION}"
    if meta["version"] > FORMAT_VERSION:
        return f"is of format {meta['version']}, newer than this rlkit reads ({FORMAT_VERSION}); upgrade rlkit"
    if not isinstance(meta.get("env_id"), str) or not isinstance(meta.get("env_kwargs") or {}, dict):
        return "has no env_id string or env_kwargs object"
    if not _is_int(meta.get("fps", 30)) or not 1 <= meta.get("fps", 30) <= 240:
        return "has an fps outside 1..240"
    if not isinstance(meta.get("web_prompt") or "", str):
        return "has a web_prompt that is not a string"
    return None


def _round_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a rounds.jsonl line: its file must be its own ``rounds/NNNN.npz`` (never a path
    elsewhere) and its pair ids plain ids (they become clip file names)."""
    index, pairs = record.get("round"), record.get("pairs")
    if not _is_int(index) or not 0 <= index <= 9999 or not isinstance(pairs, list):
        return "has no round number 0..9999 or no pair list"
    if record.get("file") != f"rounds/{index:04d}.npz" or not isinstance(record.get("sha256"), str):
        return f"names another file than rounds/{index:04d}.npz, or no checksum"
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("pair"), str) or not _PAIR_RE.match(pair["pair"]) \
                or pair.get("left_fragment") not in (1, 2):
            return "holds a pair without a plain id (NNNN-NNNN-HEX) or without left_fragment 1 or 2"
        fragments = pair.get("fragments")
        if not isinstance(fragments, list) or len(fragments) != 2 or not all(
                isinstance(f, dict) and all(_is_int(f.get(k)) for k in ("seed", "start", "end")) for f in fragments):
            return "holds a pair without two fragments of whole-number seed, start and end"
    return None


def _round_arrays_problem(arrays: dict[str, np.ndarray], pairs: int) -> str | None:
    """What is wrong with a round file's arrays for ``pairs`` pairs (indexing them must not fail later)."""
    names = [f"{k}{w}" for w in (1, 2) for k in ("obs", "acts", "rews")]
    missing = [k for k in (*names, "prefix_acts", "prefix_offsets") if k not in arrays]
    if missing:
        return f"lacks the arrays {', '.join(missing)}"
    if any(arrays[k].ndim == 0 or len(arrays[k]) != pairs for k in names):
        return f"holds fragments for another number of pairs than its line in rounds.jsonl ({pairs})"
    offsets = arrays["prefix_offsets"]
    if offsets.shape != (2 * pairs + 1,) or offsets.dtype.kind not in "iu" or np.any(np.diff(offsets) < 0) \
            or offsets[0] < 0 or offsets[-1] > len(arrays["prefix_acts"]):
        return "has replay offsets that do not index its replay actions"
    return None


def _answer_problem(row: dict[str, Any]) -> str | None:
    preference = row.get("preference")
    if not isinstance(row.get("pair"), str) or not isinstance(row.get("rater"), str) \
            or not (preference is None or (isinstance(preference, (int, float)) and 0 <= preference <= 1)):
        return "is not an answer (pair and rater strings, preference null or 0..1)"
    return None


class PreferenceStore:
    """The preference labels of one run, on disk (see the module docstring for the layout).

    Opening it for writing takes an exclusive lock on ``prefs/lock``: one trainer or one server at a time.

    Args:
        run_dir: the run directory holding ``prefs/``.
        write: take the lock and trim torn last lines (False: read only, e.g. ``rlkit prefs status``).
        env_id: the env id the user named (``rlkit prefs serve --env``, or the run's config, which the CLI
            checks): the store's own ``env_id`` is made for clips only when it imports no module or equals it.
    """

    def __init__(self, run_dir: str | Path, write: bool = True, env_id: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / PREFS_DIR
        self.trusted_env_id = env_id
        meta_path = self.root / "meta.json"
        data = read_run_file(meta_path, self.run_dir)
        if data is None:
            raise RLKitError(f"{self.run_dir} holds no preference labels ({meta_path} missing); "
                             "start one with `rlkit train preference --set rater=web`")
        try:
            self.meta = json.loads(data)
        except (ValueError, RecursionError):
            self.meta = None
        if _meta_problem(self.meta):
            raise RLKitError(f"{meta_path} {_meta_problem(self.meta)}")
        self._lock_fd: int | None = None
        self._render_env: Any = None
        self._round_cache: tuple[int | None, dict[str, np.ndarray]] = (None, {})
        self._mutex = threading.Lock()
        try:
            if write:
                self._lock()
            self._read()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        """Take ``prefs/lock`` and trim torn tails; every file is opened as a regular file inside the run."""
        self._lock_fd = open_in_home(self.root / "lock", self.run_dir, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RLKitError(f"{self.root} is in use by another rlkit process (a trainer or `rlkit prefs "
                             "serve`); stop it first") from None
        _trim_torn_tail(self.root / "rounds.jsonl", self.run_dir)
        _trim_torn_tail(self.root / "answers.jsonl", self.run_dir)
        (self.root / "videos").mkdir(exist_ok=True)  # each clip's path is checked before it is written

    def _read(self) -> None:
        rows = _read_lines(self.root / "rounds.jsonl", self.run_dir, _round_problem)
        self.rounds: dict[int, dict[str, Any]] = {r["round"]: r for r in rows}
        self.pairs: dict[str, dict[str, Any]] = {p["pair"]: {**p, "round": r["round"]}
                                                 for r in self.rounds.values() for p in r["pairs"]}
        self.answers: list[dict[str, Any]] = _read_lines(self.root / "answers.jsonl", self.run_dir, _answer_problem)
        self.resolved: dict[str, dict[str, Any]] = {}
        for a in self.answers:
            self.resolved.setdefault(a["pair"], a)

    @staticmethod
    def create(run_dir: str | Path, meta: dict[str, Any], env_id: str | None = None) -> PreferenceStore:
        """Make ``RUN_DIR/prefs`` with ``meta`` (env id, kwargs, spaces, fragment length, fps) unless it exists."""
        root = Path(run_dir) / PREFS_DIR
        check_inside(root / "meta.json", run_dir)  # a symlinked prefs/ would put the store elsewhere
        (root / "rounds").mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(root / "meta.json"):
            atomic_write_text(root / "meta.json", json.dumps(
                {"format": FORMAT, "version": FORMAT_VERSION, "created": now_iso(), **meta}, indent=2))
        return PreferenceStore(run_dir, env_id=env_id)

    def check_env_id(self) -> str:
        """The env id to make for clips, refused in one line when it would import a module the user did not name."""
        env_id = self.meta["env_id"]
        if self.trusted_env_id is not None and self.trusted_env_id != env_id:
            raise RLKitError(f"{self.root / 'meta.json'} holds labels for env {env_id!r}, not "
                             f"{self.trusted_env_id!r}; name the run's own env (--env {env_id}) or another run")
        if imports_code("env_id", env_id) and self.trusted_env_id != env_id:
            raise RLKitError(f"{self.root / 'meta.json'} names env_id={env_id!r}, which imports code; rlkit imports "
                             f"it only when you name it yourself: add --env {env_id}")
        return env_id

    def close(self) -> None:
        if self._render_env is not None:
            self._render_env.close()
            self._render_env = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- rounds -------------------------------------------------------------------------------

    def round_path(self, round_index: int) -> Path:
        return self.root / "rounds" / f"{round_index:04d}.npz"

    def add_round(self, round_index: int, pairs: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
        """Commit a round: its arrays first (atomically), then its line in rounds.jsonl.

        Args:
            round_index: 0, 1, ... in query order.
            pairs: per pair ``{"pair", "left_fragment", "fragments": [origin1, origin2]}`` where an origin
                is ``{"seed", "start", "end"}`` (reset seed of its episode, steps [start, end)).
            arrays: ``obs1 acts1 rews1 obs2 acts2 rews2`` stacked over pairs, plus ``prefix_acts`` and
                ``prefix_offsets`` (the replay actions of fragment k of the round are
                ``prefix_acts[prefix_offsets[k]:prefix_offsets[k+1]]``, k = 2*pair + side).
        """
        if round_index in self.rounds:
            raise RLKitError(f"round {round_index} is already stored in {self.root}")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        check_inside(self.round_path(round_index), self.run_dir)  # a symlinked rounds/ would write elsewhere
        atomic_write_bytes(self.round_path(round_index), data)
        record = {"round": round_index, "file": f"rounds/{round_index:04d}.npz",
                  "sha256": hashlib.sha256(data).hexdigest(), "time": now_iso(), "pairs": pairs}
        with self._mutex:
            _append_line(self.root / "rounds.jsonl", self.run_dir, record, fsync=True)
            self.rounds[round_index] = record
            for p in pairs:
                self.pairs[p["pair"]] = {**p, "round": round_index}

    def load_round(self, round_index: int) -> dict[str, np.ndarray]:
        """A round's arrays, checked against the checksum in its committed line (no pickle)."""
        if self._round_cache[0] == round_index:  # clips of one round are rendered one pair after another
            return self._round_cache[1]
        record = self.rounds[round_index]
        path = self.root / record["file"]  # rounds/NNNN.npz, checked when rounds.jsonl was read
        data = read_run_file(path, self.run_dir) or b""
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise RLKitError(f"{path} is missing or damaged (checksum mismatch); its round's pairs cannot be "
                             "shown or trained on")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:  # object arrays (pickles) are refused here too
            raise RLKitError(f"{path} is not a round file of numeric arrays ({e})") from None
        wrong = _round_arrays_problem(arrays, len(record["pairs"]))
        if wrong:
            raise RLKitError(f"{path} {wrong}; its round's pairs cannot be shown or trained on")
        self._round_cache = (round_index, arrays)
        return arrays

    def fragment(self, pair_id: str, which: int) -> dict[str, Any]:
        """Fragment ``which`` (1 or 2) of a pair: obs, acts, true rews, replay actions and origin."""
        pair = self.pairs[pair_id]
        arrays = self.load_round(pair["round"])
        i = next(k for k, p in enumerate(self.rounds[pair["round"]]["pairs"]) if p["pair"] == pair_id)
        k = 2 * i + (which - 1)
        lo, hi = arrays["prefix_offsets"][k], arrays["prefix_offsets"][k + 1]
        return {"obs": arrays[f"obs{which}"][i], "acts": arrays[f"acts{which}"][i],
                "rews": arrays[f"rews{which}"][i], "replay_acts": arrays["prefix_acts"][lo:hi],
                **pair["fragments"][which - 1]}

    # -- answers ------------------------------------------------------------------------------

    def append_answer(self, pair_id: str, answer: str, rater: str) -> dict[str, Any]:
        """Store one answer (fsynced) and return its record; the first answer of a pair is the one that counts."""
        if pair_id not in self.pairs:
            raise RLKitError(f"unknown pair {pair_id!r}")
        if answer not in ANSWERS:
            raise RLKitError(f"answer must be one of {', '.join(ANSWERS)}; got {answer!r}")
        pair = self.pairs[pair_id]
        shown = [pair["fragments"][pair["left_fragment"] - 1], pair["fragments"][2 - pair["left_fragment"]]]
        with self._mutex:
            record = {"pair": pair_id, "round": pair["round"], "answer": answer,
                      "preference": preference_of(answer, pair["left_fragment"]),
                      "left": shown[0], "right": shown[1], "left_fragment": pair["left_fragment"],
                      "rater": rater, "time": now_iso(), "unix": round(time.time(), 3),
                      "duplicate": pair_id in self.resolved}
            _append_line(self.root / "answers.jsonl", self.run_dir, record, fsync=True)
            self.answers.append(record)
            self.resolved.setdefault(pair_id, record)
        return record

    def preferences(self, pair_ids: Iterable[str]) -> np.ndarray:
        """P(fragment 1 better) per pair from its first answer (NaN for skipped); all must be answered."""
        return np.array([np.nan if self.resolved[p]["preference"] is None else self.resolved[p]["preference"]
                         for p in pair_ids], dtype=np.float32)

    # -- clips --------------------------------------------------------------------------------

    def video_path(self, pair_id: str, side: str) -> Path:
        return self.root / "videos" / f"{pair_id}-{side}.mp4"

    def render_pair(self, pair_id: str, make_env: Callable[..., Any] | None = None) -> None:
        """Render both clips of a pair unless they exist (each written atomically; the two encode in parallel)."""
        pair = self.pairs[pair_id]
        jobs = []
        for side, which in (("left", pair["left_fragment"]), ("right", 3 - pair["left_fragment"])):
            path = check_inside(self.video_path(pair_id, side), self.run_dir)  # a planted symlink is refused
            if not path.exists():
                frames = replay_frames(self.meta, self.fragment(pair_id, which), self._env(make_env))
                jobs.append(threading.Thread(target=write_clip, args=(frames, path, int(self.meta.get("fps", 30)),
                                                                      self.run_dir)))
        for job in jobs:  # ffmpeg runs in its own process: two clips, two cores
            job.start()
        for job in jobs:
            job.join()
        for side in ("left", "right"):
            if not self.video_path(pair_id, side).exists():
                raise RLKitError(f"could not write the {side} clip of pair {pair_id} (see the ffmpeg error above)")

    def _env(self, make_env: Callable[..., Any] | None) -> Any:
        """One rgb_array env for all clips (creating one costs more than replaying an episode)."""
        if self._render_env is None:
            env_id = self.check_env_id()  # before anything imports the module it may name
            if make_env is None:
                from rlkit.registry import env_factory

                make_env = env_factory()
            # rgb_array needs no window or sound; SDL would otherwise complain on headless machines
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
            self._render_env = make_env(env_id, render_mode="rgb_array",
                                        env_kwargs=self.meta.get("env_kwargs") or {})
        return self._render_env


def replay_frames(meta: dict[str, Any], fragment: dict[str, Any], env: Any) -> list[np.ndarray]:
    """The rgb_array frames of a fragment, replayed in ``env`` from its episode's reset seed and actions.

    The replayed observations are checked against the stored ones, so a clip never shows something
    other than what the reward model will be trained on.
    """
    obs, _ = env.reset(seed=int(fragment["seed"]))
    start, acts = int(fragment["start"]), fragment["replay_acts"]
    frames = []
    for t in range(len(acts)):
        if t == start:
            _check_replay(meta, fragment, obs, 0)
            frames.append(np.asarray(env.render()))
        obs = env.step(acts[t])[0]
        if t >= start:
            frames.append(np.asarray(env.render()))
    _check_replay(meta, fragment, obs, len(acts) - start)
    return frames


def _check_replay(meta: dict[str, Any], fragment: dict[str, Any], obs: Any, k: int) -> None:
    expected = fragment["obs"][k]
    if np.asarray(obs).shape != expected.shape or not np.allclose(np.asarray(obs, np.float64), expected, atol=1e-4):
        raise RLKitError(f"replaying episode seed {fragment['seed']} of {meta['env_id']} did not reproduce the "
                         f"fragment's observation at step {int(fragment['start']) + k}: the env is not deterministic "
                         "given its reset seed and actions, which the web rater needs to render clips")


def write_clip(frames: list[np.ndarray], path: Path, fps: int, home: Path) -> None:
    """H.264 mp4 (yuv420p, moov atom first so browsers start at once), written to a temp file then renamed.

    The temp file gets a random name and is created here (exclusively, a regular file inside ``home``) before
    ffmpeg opens it by name, so a symlink planted under a predictable name cannot redirect the write.
    """
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp.mp4")
    os.close(open_in_home(tmp, home, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sizes: pad one edge row/column
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    try:
        with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p",
                                ffmpeg_log_level="error", ffmpeg_params=["-movflags", "+faststart"]) as writer:
            for frame in frames:
                writer.append_data(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
        os.replace(tmp, path)  # replaces a symlink itself, never its target
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The label queue: which pair each rater sees, leases, waiting for a round
# ---------------------------------------------------------------------------------------------

class LabelQueue:
    """Pairs open for labelling, leased one per rater; thread-safe (server threads + the gatherer).

    Args:
        store: the run's :class:`PreferenceStore`.
        lease_s: seconds a pair stays reserved for the rater who got it.
        clock: seconds, monotonic (tests pass a fake one to expire leases without sleeping).
    """

    def __init__(self, store: PreferenceStore, lease_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.lease_s = lease_s
        self.clock = clock
        self.ready: list[str] = []            # pairs whose clips exist, in query order
        self.pending: set[str] = set()         # pairs announced but still rendering
        self.leases: dict[str, tuple[str, float]] = {}
        self.round: int | None = None
        self.round_pairs: list[str] = []
        self.status = "starting"
        self.closed = False
        self._cond = threading.Condition()

    def open_round(self, round_index: int, pair_ids: list[str], status: str = "labelling") -> None:
        with self._cond:
            self.round, self.round_pairs, self.status = round_index, list(pair_ids), status
            self.pending.update(p for p in pair_ids if p not in self.store.resolved)
            self._cond.notify_all()

    def mark_ready(self, pair_id: str) -> None:
        with self._cond:
            self.pending.discard(pair_id)
            if pair_id not in self.store.resolved and pair_id not in self.ready:
                self.ready.append(pair_id)
            self._cond.notify_all()

    def set_status(self, status: str) -> None:
        with self._cond:
            self.status = status

    def lease(self, rater: str) -> str | None:
        """The pair this rater should label now (the same one again after a reload), or None."""
        with self._cond:
            now = self.clock()
            for pair_id, (_, expiry) in list(self.leases.items()):
                if expiry < now or pair_id in self.store.resolved:
                    del self.leases[pair_id]
            for pair_id, (holder, _) in self.leases.items():
                if holder == rater:
                    self.leases[pair_id] = (rater, now + self.lease_s)
                    return pair_id
            self.ready = [p for p in self.ready if p not in self.store.resolved]
            for pair_id in self.ready:
                if pair_id not in self.leases:
                    self.leases[pair_id] = (rater, now + self.lease_s)
                    return pair_id
            return None

    def answer(self, pair_id: str, answer: str, rater: str) -> dict[str, Any]:
        record = self.store.append_answer(pair_id, answer, rater)  # on disk before anyone hears back
        with self._cond:
            self.leases.pop(pair_id, None)
            with contextlib.suppress(ValueError):
                self.ready.remove(pair_id)
            self._cond.notify_all()
        return record

    def wait_resolved(self, pair_ids: list[str], poll_s: float = 0.5) -> None:
        """Block until every pair has an answer (wakes every ``poll_s`` so Ctrl-C gets through)."""
        with self._cond:
            while not all(p in self.store.resolved for p in pair_ids):
                if self.closed:
                    raise RLKitError("the label server was stopped before the round was answered")
                self._cond.wait(poll_s)

    def progress(self, rater: str | None = None) -> dict[str, Any]:
        with self._cond:
            resolved = self.store.resolved
            answers = self.store.answers
            round_done = sum(p in resolved for p in self.round_pairs)
            return {
                "round": self.round, "status": self.status,
                "round_total": len(self.round_pairs), "round_done": round_done,
                "labelled": len(resolved),
                "queued": sum(p not in resolved for p in self.ready),
                "rendering": len(self.pending),
                "in_progress": len(self.leases),
                "by_you": sum(a["rater"] == rater for a in answers) if rater else 0,
                "skipped": sum(a["preference"] is None for a in resolved.values()),
            }


# ---------------------------------------------------------------------------------------------
# The HTTP server
# ---------------------------------------------------------------------------------------------

def page_html() -> bytes:
    return resources.files("rlkit.apps").joinpath("prefs_page.html").read_bytes()


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in a JSON text (brackets inside strings do not count).

    Checked before ``json.loads``, which recurses once per level: 5,000 ``[`` would end in a RecursionError.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _one_line(text: Any, limit: int = 200) -> str:
    """``text`` fit for one log line: control characters (a CR/LF smuggled into a path) shown as ``?``."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", str(text))[:limit]


class _Refused(Exception):
    """A request answered with a 4xx status and a one-line reason (logged once)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class _Handler(BaseHTTPRequestHandler):
    server_version = "rlkit-prefs"
    app: PrefsServer  # set on the subclass made per server, with ``timeout`` (seconds per socket read)
    _reason = ""

    # -- logging: nothing for requests that succeed, one line for each refused or failed one ----------

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        self._reason = format % args  # send_error says why, then send_response logs the line

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if isinstance(code, int) and code >= 400:
            command, path = getattr(self, "command", None) or "-", getattr(self, "path", None) or "-"
            self.app.log(f"rlkit prefs: {int(code)} {_one_line(command, 16)} {_one_line(path, 80)} from "
                         f"{self.client_address[0]}: {_one_line(self._reason)}")

    # -- plumbing -----------------------------------------------------------------------------

    def _cookies(self) -> dict[str, str]:
        jar = http.cookies.SimpleCookie()
        with contextlib.suppress(http.cookies.CookieError):
            jar.load(self.headers.get("Cookie", ""))
        return {k: v.value for k, v in jar.items()}

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers)

    def _refuse(self, code: int, reason: str) -> None:
        self._reason = reason
        self.close_connection = True  # an unread body must not be taken for the next request
        self._json(code, {"error": reason})

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        app = self.app
        if app.token is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            return host in LOOPBACK
        given = (query.get("token") or [""])[0] or self._cookies().get("rlkit_token", "")
        return hmac.compare_digest(given.encode(), app.token.encode())

    def _check_origin(self) -> None:
        """A browser names the page that sent a request in ``Origin``; only this server's own page may."""
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            raise _Refused(403, f"forbidden: a request from another site ({origin})")

    def _check_secret(self) -> None:
        """State-changing requests carry the secret the server wrote into its page, which other sites cannot read."""
        given = self.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(errors="replace"), self.app.secret.encode()):
            raise _Refused(403, f"forbidden: the {SECRET_HEADER} header is missing or wrong (reload the page "
                                "the trainer printed)")

    def _rater(self, query: dict[str, list[str]], body: dict[str, Any] | None = None) -> str | None:
        rater = (body or {}).get("rater") or (query.get("rater") or [""])[0] or self._cookies().get("rlkit_rater")
        return rater if isinstance(rater, str) and _RATER_RE.match(rater) else None

    def _read_json_body(self) -> dict[str, Any]:
        """The request's JSON object, read whole: any missing, partial, oversized or too deep body is refused."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") or not lengths:
            raise _Refused(411, "send the body with one Content-Length (no chunked encoding)")
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,9}", lengths[0].strip()):
            raise _Refused(400, f"Content-Length {_one_line(', '.join(lengths), 40)!r} is not one byte count")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            raise _Refused(413, f"request body of {length} bytes; at most {MAX_BODY_BYTES}")
        if self.headers.get_content_type() != "application/json":
            raise _Refused(415, "send the body as Content-Type: application/json")
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise _Refused(408, f"the body did not arrive within {self.timeout:g} s") from None
        if len(data) != length:
            raise _Refused(400, f"the body ended after {len(data)} of {length} bytes")
        if json_depth(data) > MAX_JSON_DEPTH:
            raise _Refused(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise _Refused(400, "the body must be a JSON object {pair, answer, rater}")
        return body

    # -- routes -------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        try:
            if not self._authorised(query):
                raise _Refused(403, "forbidden: open the URL the trainer printed (with its token)")
            self._check_origin()
            if method == "GET" and url.path in ("/", "/index.html"):
                self._page(query)
            elif method == "GET" and url.path == "/api/next":
                self._check_secret()  # it leases a pair: state-changing
                self._next(query)
            elif method == "GET" and url.path == "/api/progress":
                self._json(200, self.app.queue.progress(self._rater(query)))
            elif method == "POST" and url.path == "/api/answer":
                self._check_secret()
                self._answer(query)
            elif method == "GET" and url.path.startswith("/video/"):
                self._video(url.path)
            else:
                self._refuse(404, f"no such resource: {method} {_one_line(url.path, 80)}")
        except _Refused as e:
            self._refuse(e.code, e.reason)
        except RLKitError as e:
            self._refuse(400, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a video seek, a closed tab)

    def _page(self, query: dict[str, list[str]]) -> None:
        tail = "; Path=/; SameSite=Strict; Max-Age=31536000"
        cookies = []  # the token as a cookie, so that the clips' URLs need not carry it
        if self.app.token is not None:
            cookies.append(f"rlkit_token={self.app.token}; HttpOnly{tail}")
        rater = self._rater(query) or "rater-" + secrets.token_hex(4)
        if self._cookies().get("rlkit_rater") != rater:
            cookies.append(f"rlkit_rater={rater}{tail}")
        # one pass, so that a prompt containing a placeholder's name is shown as written
        fills = {"__RATER__": rater, "__SECRET__": self.app.secret,
                 "__PROMPT__": html.escape(self.app.prompt or PROMPT_FALLBACK)}
        body = re.sub(r"__(RATER|SECRET|PROMPT)__", lambda m: fills[m.group(0)], page_html().decode()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src "
                                                    "'unsafe-inline'; media-src 'self'; img-src 'self' data:; "
                                                    "frame-ancestors 'none'")
        self.send_header("X-Frame-Options", "DENY")  # the page holds the secret: no framing by other sites
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _next(self, query: dict[str, list[str]]) -> None:
        rater = self._rater(query)
        if rater is None:
            raise RLKitError("rater id missing or malformed (letters, digits, _.@-, at most 64)")
        pair_id = self.app.queue.lease(rater)
        pair = None
        if pair_id is not None:
            pair = {"id": pair_id, "round": self.app.store.pairs[pair_id]["round"],
                    "left": f"/video/{pair_id}/left.mp4", "right": f"/video/{pair_id}/right.mp4"}
        self._json(200, {"pair": pair, "rater": rater, "progress": self.app.queue.progress(rater),
                         "lease_s": self.app.queue.lease_s})

    def _answer(self, query: dict[str, list[str]]) -> None:
        body = self._read_json_body()
        rater = self._rater(query, body)
        if rater is None:
            raise RLKitError("rater id missing or malformed (letters, digits, _.@-, at most 64)")
        pair_id, answer = body.get("pair"), body.get("answer")
        if not isinstance(pair_id, str) or pair_id not in self.app.store.pairs:
            raise RLKitError(f"unknown pair {_one_line(pair_id, 60)!r}")
        if not isinstance(answer, str) or answer not in ANSWERS:
            raise RLKitError(f"answer must be one of {', '.join(ANSWERS)}; got {_one_line(answer, 40)!r}")
        record = self.app.queue.answer(pair_id, answer, rater)
        self._json(200, {"stored": True, "duplicate": record["duplicate"],
                         "progress": self.app.queue.progress(rater)})

    def _video(self, path: str) -> None:
        parts = path.split("/")  # "", "video", PAIR, SIDE.mp4
        if len(parts) != 4 or not _PAIR_RE.match(parts[2]) or parts[3] not in ("left.mp4", "right.mp4") \
                or parts[2] not in self.app.store.pairs:
            raise _Refused(404, "no such clip")
        data = read_run_file(self.app.store.video_path(parts[2], parts[3][:-4]), self.app.store.run_dir)
        if data is None:
            raise _Refused(404, "clip not rendered yet")
        # Range requests: browsers seek (and so loop and sync) only in media served with byte ranges.
        match = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
            else:
                start, end = max(len(data) - int(match.group(2)), 0), len(data) - 1
            if start > end:
                self._send(416, b"", "video/mp4", {"Content-Range": f"bytes */{len(data)}"})
                return
            self._send(206, data[start:end + 1], "video/mp4",
                       {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"})
        else:
            self._send(200, data, "video/mp4", {"Accept-Ranges": "bytes"})


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer whose unexpected errors are one log line, not a traceback in the trainer's terminal."""

    daemon_threads = True
    log: Callable[[str], None]

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return  # the client went away or stalled; nothing was stored for it
        self.log(f"rlkit prefs: error serving {client_address[0]}: {type(error).__name__}: {_one_line(error)}")


class PrefsServer:
    """The label page and its JSON API over a :class:`LabelQueue`, in a background thread.

    Args:
        queue: the pairs to serve and the store behind them.
        host: address to bind; anything but loopback requires ``token`` (generated when None).
        port: TCP port (0 = any free one).
        token: access token required in the URL (``?token=``) or cookie on every request.
        prompt: the task, shown to the rater above the clips (None: the store's ``web_prompt``).
        request_timeout_s: seconds a connection may stall while its request is read.
        log: where the one-line entries for refused requests go (default: stderr).
    """

    def __init__(self, queue: LabelQueue, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 prompt: str | None = None, request_timeout_s: float = 10.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.queue, self.store = queue, queue.store
        if not token and host not in LOOPBACK:
            token = secrets.token_urlsafe(18)
        self.token = token or None
        self.secret = secrets.token_urlsafe(24)  # per start: written into the page, required on state changes
        self.prompt = str(queue.store.meta.get("web_prompt") or "") if prompt is None else prompt
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        handler = type("Handler", (_Handler,), {"app": self, "timeout": request_timeout_s})
        try:
            self.httpd = _Server((host, port), handler)
        except OSError as e:
            raise RLKitError(f"cannot serve on {host}:{port} ({e.strerror}); pick another --set web_port "
                             "(0 = any free port)") from None
        self.httpd.log = self.log
        self.host, self.port = host, self.httpd.server_address[1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rlkit-prefs", daemon=True)

    def start(self) -> PrefsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.queue.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> PrefsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# A scripted rater: answers through the page's HTTP API (tests, and checking a setup end to end)
# ---------------------------------------------------------------------------------------------

def true_return_oracle(run_dir: str | Path) -> Callable[[str], str]:
    """pair id -> the answer of a rater who prefers the higher true return (equal on a tie).

    Reads the true rewards from the round files (which the page never serves); ties and sums are
    computed like imitation's ``SyntheticGatherer`` (float32 sums), so the two agree pair by pair.
    """
    current = [PreferenceStore(run_dir, write=False)]

    def oracle(pair_id: str) -> str:
        if pair_id not in current[0].pairs:  # a round was committed since: read the store again
            current[0] = PreferenceStore(run_dir, write=False)
        store = current[0]
        pair = store.pairs[pair_id]
        returns = [np.float32(np.sum(store.fragment(pair_id, w)["rews"], dtype=np.float32)) for w in (1, 2)]
        left, right = returns[pair["left_fragment"] - 1], returns[2 - pair["left_fragment"]]
        return "left" if left > right else "right" if right > left else "equal"

    return oracle


class ScriptedRater(threading.Thread):
    """Polls ``/api/next`` and posts ``oracle(pair_id)`` to ``/api/answer`` until stopped.

    It reads the server's secret from the page, as a browser does, and reads it again when a new server
    (a resumed run) answers 403.

    Args:
        url: the URL the server printed (with its token, if any).
        oracle: pair id -> ``left|right|equal|skip``.
        rater: the rater id sent with each answer.
    """

    def __init__(self, url: str, oracle: Callable[[str], str], rater: str = "scripted", poll_s: float = 0.05
                 ) -> None:
        super().__init__(name=f"rlkit-rater-{rater}", daemon=True)
        parts = urllib.parse.urlsplit(url)
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
        self.oracle, self.rater, self.poll_s = oracle, rater, poll_s
        self.secret: str | None = None
        self.answered = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def _query(self) -> str:
        return urllib.parse.urlencode({"rater": self.rater, **({"token": self.token} if self.token else {})})

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.secret is None:
            self.secret = page_secret(f"{self.base}/?{self._query()}")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}?{self._query()}", data=data,
                                         headers={"Content-Type": "application/json", SECRET_HEADER: self.secret})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _next_pair(self, refused: int) -> tuple[str | None, int]:
        """(the pair to answer or None, consecutive 403s); a 403 twice in a row, with a fresh secret, is an error."""
        try:
            reply = self._request("/api/next")
        except urllib.error.HTTPError as e:
            if e.code != 403 or refused:
                raise
            self.secret = None  # a new server since the secret was read
            return None, refused + 1
        except (urllib.error.URLError, ConnectionError):
            self.secret = None  # the server is not up yet (or between runs)
            return None, 0
        return (reply["pair"] or {}).get("id"), 0

    def run(self) -> None:
        refused = 0
        try:
            while not self._stop_event.is_set():
                pair_id, refused = self._next_pair(refused)
                if pair_id is None:
                    self._stop_event.wait(self.poll_s)
                    continue
                self._request("/api/answer", {"pair": pair_id, "answer": self.oracle(pair_id), "rater": self.rater})
                self.answered += 1
        except BaseException as e:  # surfaced to the test through .error
            self.error = e

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def page_secret(page_url: str, timeout_s: float = 10.0) -> str:
    """The per-server secret written into the label page at ``page_url`` (what the page's script sends)."""
    with urllib.request.urlopen(page_url, timeout=timeout_s) as response:
        page = response.read().decode("utf-8", errors="replace")
    match = re.search(r'<meta name="rlkit-secret" content="([A-Za-z0-9_-]+)">', page)
    if match is None:
        raise RLKitError(f"{page_url} is not an rlkit label page (no secret in it)")
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# `rlkit prefs serve|status`
# ---------------------------------------------------------------------------------------------

def serve_store(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                lease_s: float = 120.0, until_done: bool = False, on_url: Callable[[str], None] | None = None,
                env_id: str | None = None, prompt: str | None = None) -> dict[str, Any]:
    """Serve a run's unanswered pairs (rendering missing clips) until Ctrl-C, or until all are answered.

    ``env_id`` is the env the user named (``--env``): a run whose ``meta.json`` names a module to import is
    served only when it is given and the same. ``prompt`` replaces the run's ``web_prompt`` on the page.
    """
    store = PreferenceStore(run_dir, env_id=env_id)
    try:
        if any(p not in store.resolved for p in store.pairs):
            store.check_env_id()  # refused before the server starts, not at its first clip
        queue = LabelQueue(store, lease_s)
        open_ids = [p for p in store.pairs if p not in store.resolved]
        queue.open_round(max(store.rounds) if store.rounds else 0, open_ids, status="serving a stored run")
        with PrefsServer(queue, host, port, token, prompt=prompt) as server:
            (on_url or (lambda url: print(f"rlkit prefs: label at {url}", flush=True)))(server.url)
            for pair_id in open_ids:
                store.render_pair(pair_id)
                queue.mark_ready(pair_id)
            try:
                if until_done:
                    queue.wait_resolved(open_ids)
                else:
                    while True:
                        time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return queue.progress()
    finally:
        store.close()


def store_status(run_dir: str | Path) -> dict[str, Any]:
    store = PreferenceStore(run_dir, write=False)
    rounds = []
    for r, record in sorted(store.rounds.items()):
        ids = [p["pair"] for p in record["pairs"]]
        rounds.append({"round": r, "pairs": len(ids), "answered": sum(p in store.resolved for p in ids)})
    raters: dict[str, int] = {}
    for a in store.answers:
        raters[a["rater"]] = raters.get(a["rater"], 0) + 1
    return {"run_dir": str(store.run_dir), "env_id": store.meta["env_id"], "pairs": len(store.pairs),
            "answered": len(store.resolved), "answers": len(store.answers),
            "skipped": sum(a["preference"] is None for a in store.resolved.values()), "raters": raters,
            "rounds": rounds}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("prefs", help="label preference pairs in the browser (learning from human preferences)",
                              description="Preference labels of `rlkit train preference --set rater=web` runs.")
    sub = p.add_subparsers(dest="prefs_command", metavar="SUBCOMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="serve a run's unanswered pairs on a local page",
                           description="Serve the unanswered pairs of RUN_DIR for labelling (no training). "
                                       "Resume training later with `rlkit train preference --resume RUN_DIR`.")
    serve.add_argument("run_dir", metavar="RUN_DIR")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; other than loopback needs a token")
    serve.add_argument("--port", type=int, default=8765, help="TCP port (0 = any free one)")
    serve.add_argument("--token", help="access token for the URL (generated when binding beyond loopback)")
    serve.add_argument("--lease", type=float, default=120.0, help="seconds a pair stays reserved for one rater")
    serve.add_argument("--until-done", action="store_true", help="exit once every stored pair is answered")
    serve.add_argument("--env", dest="env_id", metavar="ENV_ID",
                       help="the run's env id; needed when it names a module to import (pkg.module:Env-v0), "
                            "which rlkit imports only when you name it")
    serve.add_argument("--prompt", help="the task shown above the clips (default: the run's web_prompt)")
    serve.set_defaults(func=_cmd_serve)
    status = sub.add_parser("status", help="how many pairs are stored and answered, by round and rater")
    status.add_argument("run_dir", metavar="RUN_DIR")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_cmd_status)


def _cmd_serve(args: argparse.Namespace) -> int:
    progress = serve_store(args.run_dir, args.host, args.port, args.token, args.lease, args.until_done,
                           env_id=args.env_id, prompt=args.prompt)
    print(f"rlkit prefs: {progress['labelled']} pairs answered in {args.run_dir}", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    status = store_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"{status['run_dir']} ({status['env_id']}): {status['answered']}/{status['pairs']} pairs answered "
              f"({status['skipped']} skipped), {status['answers']} answers from "
              + ", ".join(f"{k} ({v})" for k, v in status["raters"].items()))
    return 0
