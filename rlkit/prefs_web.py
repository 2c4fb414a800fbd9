"""Human preferences in the browser: the answer store, the label queue, the local web server, the clips.

Christiano et al. (2017) asked people which of two short clips of an agent was better. This module is
the person's side of ``rlkit train preference --set rater=web``: each round, the pairs of trajectory
fragments that imitation's ``PreferenceComparisons`` queries are rendered to short H.264 clips, served
on a local page (two clips side by side, looping in sync; keys ArrowLeft / ArrowRight / ``=`` / ``s``),
and every answer is written to the run directory before the page hears back. The imitation side (the
gatherer, the fragments' origins, offline reward training) is :mod:`rlkit.agents.preference_web`.

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
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import http.cookies
import io
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.checkpoint import atomic_write_bytes, atomic_write_text
from rlkit.errors import RLKitError

FORMAT = "rlkit-prefs"
FORMAT_VERSION = 1
PREFS_DIR = "prefs"
ANSWERS = ("left", "right", "equal", "skip")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_RATER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_PAIR_RE = re.compile(r"^[0-9]{4}-[0-9]{4}$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# The store: rounds of pairs, answers, clips, all under RUN_DIR/prefs
# ---------------------------------------------------------------------------------------------

def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The committed JSON lines of ``path`` (a last line without newline is a crash's torn write)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise RLKitError(f"{path}: line {number} is not JSON (the file was edited or damaged); "
                             "fix or remove that line") from None
    return rows


def _trim_torn_tail(path: Path) -> None:
    """Cut an uncommitted last line (no newline) left by a killed writer; committed lines are untouched."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def _append_line(path: Path, record: dict[str, Any], fsync: bool) -> None:
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, line) != len(line):  # regular files write whole; a short write is a full disk
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


class PreferenceStore:
    """The preference labels of one run, on disk (see the module docstring for the layout).

    Opening it for writing takes an exclusive lock on ``prefs/lock``: one trainer or one server at a time.
    """

    def __init__(self, run_dir: str | Path, write: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / PREFS_DIR
        if not (self.root / "meta.json").exists():
            raise RLKitError(f"{self.run_dir} holds no preference labels ({self.root}/meta.json missing); "
                             "start one with `rlkit train preference --set rater=web`")
        self.meta = json.loads((self.root / "meta.json").read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("version", 0) > FORMAT_VERSION:
            raise RLKitError(f"{self.root}/meta.json is not an rlkit preference store of format <= "
                             f"{FORMAT_VERSION}; upgrade rlkit")
        self._lock_fd: int | None = None
        self._render_env: Any = None
        self._round_cache: tuple[int | None, dict[str, np.ndarray]] = (None, {})
        self._mutex = threading.Lock()
        if write:
            self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise RLKitError(f"{self.root} is in use by another rlkit process (a trainer or `rlkit prefs "
                                 "serve`); stop it first") from None
            _trim_torn_tail(self.root / "rounds.jsonl")
            _trim_torn_tail(self.root / "answers.jsonl")
        (self.root / "videos").mkdir(exist_ok=True)
        self.rounds: dict[int, dict[str, Any]] = {r["round"]: r for r in _read_lines(self.root / "rounds.jsonl")}
        self.pairs: dict[str, dict[str, Any]] = {p["pair"]: {**p, "round": r["round"]}
                                                 for r in self.rounds.values() for p in r["pairs"]}
        self.answers: list[dict[str, Any]] = _read_lines(self.root / "answers.jsonl")
        self.resolved: dict[str, dict[str, Any]] = {}
        for a in self.answers:
            self.resolved.setdefault(a["pair"], a)

    @staticmethod
    def create(run_dir: str | Path, meta: dict[str, Any]) -> PreferenceStore:
        """Make ``RUN_DIR/prefs`` with ``meta`` (env id, kwargs, spaces, fragment length, fps) unless it exists."""
        root = Path(run_dir) / PREFS_DIR
        (root / "rounds").mkdir(parents=True, exist_ok=True)
        if not (root / "meta.json").exists():
            atomic_write_text(root / "meta.json", json.dumps(
                {"format": FORMAT, "version": FORMAT_VERSION, "created": now_iso(), **meta}, indent=2))
        return PreferenceStore(run_dir)

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
        atomic_write_bytes(self.round_path(round_index), data)
        record = {"round": round_index, "file": f"rounds/{round_index:04d}.npz",
                  "sha256": hashlib.sha256(data).hexdigest(), "time": now_iso(), "pairs": pairs}
        with self._mutex:
            _append_line(self.root / "rounds.jsonl", record, fsync=True)
            self.rounds[round_index] = record
            for p in pairs:
                self.pairs[p["pair"]] = {**p, "round": round_index}

    def load_round(self, round_index: int) -> dict[str, np.ndarray]:
        """A round's arrays, checked against the checksum in its committed line (no pickle)."""
        if self._round_cache[0] == round_index:  # clips of one round are rendered one pair after another
            return self._round_cache[1]
        record = self.rounds[round_index]
        path = self.root / record["file"]
        data = path.read_bytes() if path.exists() else b""
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise RLKitError(f"{path} is missing or damaged (checksum mismatch); its round's pairs cannot be "
                             "shown or trained on")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
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
            _append_line(self.root / "answers.jsonl", record, fsync=True)
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
            path = self.video_path(pair_id, side)
            if not path.exists():
                frames = replay_frames(self.meta, self.fragment(pair_id, which), self._env(make_env))
                jobs.append(threading.Thread(target=write_clip, args=(frames, path, int(self.meta.get("fps", 30)))))
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
            if make_env is None:
                from rlkit.registry import env_factory

                make_env = env_factory()
            # rgb_array needs no window or sound; SDL would otherwise complain on headless machines
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
            self._render_env = make_env(self.meta["env_id"], render_mode="rgb_array",
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


def write_clip(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """H.264 mp4 (yuv420p, moov atom first so browsers start at once), written to a temp file then renamed."""
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sizes: pad one edge row/column
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p",
                            ffmpeg_log_level="error", ffmpeg_params=["-movflags", "+faststart"]) as writer:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The label queue: which pair each rater sees, leases, waiting for a round
# ---------------------------------------------------------------------------------------------

class LabelQueue:
    """Pairs open for labelling, leased one per rater; thread-safe (server threads + the gatherer)."""

    def __init__(self, store: PreferenceStore, lease_s: float = 120.0) -> None:
        self.store = store
        self.lease_s = lease_s
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
            now = time.monotonic()
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
    return resources.files("rlkit").joinpath("prefs_page.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "rlkit-prefs"
    app: PrefsServer  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # the trainer's terminal shows progress, not one line per request

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

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        app = self.app
        if app.token is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            return host in LOOPBACK
        given = (query.get("token") or [""])[0] or self._cookies().get("rlkit_token", "")
        return hmac.compare_digest(given.encode(), app.token.encode())

    def _rater(self, query: dict[str, list[str]], body: dict[str, Any] | None = None) -> str | None:
        rater = (body or {}).get("rater") or (query.get("rater") or [""])[0] or self._cookies().get("rlkit_rater")
        return rater if isinstance(rater, str) and _RATER_RE.match(rater) else None

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
        if not self._authorised(query):
            self._json(403, {"error": "forbidden: open the URL the trainer printed (with its token)"})
            return
        try:
            if method == "GET" and url.path in ("/", "/index.html"):
                self._page(query)
            elif method == "GET" and url.path == "/api/next":
                self._next(query)
            elif method == "GET" and url.path == "/api/progress":
                self._json(200, self.app.queue.progress(self._rater(query)))
            elif method == "POST" and url.path == "/api/answer":
                self._answer(query)
            elif method == "GET" and url.path.startswith("/video/"):
                self._video(url.path)
            else:
                self._json(404, {"error": f"no such resource: {method} {url.path}"})
        except RLKitError as e:
            self._json(400, {"error": str(e)})
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
        body = page_html().replace(b"__RATER__", rater.encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src "
                                                    "'unsafe-inline'; media-src 'self'; img-src 'self' data:")
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
        length = int(self.headers.get("Content-Length") or 0)
        if length > 10_000:
            raise RLKitError("request too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise RLKitError("the answer must be a JSON object {pair, answer, rater}") from None
        if not isinstance(body, dict):
            raise RLKitError("the answer must be a JSON object {pair, answer, rater}")
        rater = self._rater(query, body)
        if rater is None:
            raise RLKitError("rater id missing or malformed (letters, digits, _.@-, at most 64)")
        pair_id = body.get("pair")
        if not isinstance(pair_id, str) or pair_id not in self.app.store.pairs:
            raise RLKitError(f"unknown pair {pair_id!r}")
        record = self.app.queue.answer(pair_id, str(body.get("answer")), rater)
        self._json(200, {"stored": True, "duplicate": record["duplicate"],
                         "progress": self.app.queue.progress(rater)})

    def _video(self, path: str) -> None:
        parts = path.split("/")  # "", "video", PAIR, SIDE.mp4
        if len(parts) != 4 or not _PAIR_RE.match(parts[2]) or parts[3] not in ("left.mp4", "right.mp4") \
                or parts[2] not in self.app.store.pairs:
            self._json(404, {"error": "no such clip"})
            return
        file = self.app.store.video_path(parts[2], parts[3][:-4])
        if not file.exists():
            self._json(404, {"error": "clip not rendered yet"})
            return
        data = file.read_bytes()
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


class PrefsServer:
    """The label page and its JSON API over a :class:`LabelQueue`, in a background thread.

    Args:
        queue: the pairs to serve and the store behind them.
        host: address to bind; anything but loopback requires ``token`` (generated when None).
        port: TCP port (0 = any free one).
        token: access token required in the URL (``?token=``) or cookie on every request.
    """

    def __init__(self, queue: LabelQueue, host: str = "127.0.0.1", port: int = 8765, token: str | None = None
                 ) -> None:
        self.queue, self.store = queue, queue.store
        if not token and host not in LOOPBACK:
            token = secrets.token_urlsafe(18)
        self.token = token or None
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise RLKitError(f"cannot serve on {host}:{port} ({e.strerror}); pick another --set web_port "
                             "(0 = any free port)") from None
        self.httpd.daemon_threads = True
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
        self.answered = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        query = urllib.parse.urlencode({"rater": self.rater, **({"token": self.token} if self.token else {})})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}?{query}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    reply = self._request("/api/next")
                except (urllib.error.URLError, ConnectionError):
                    self._stop_event.wait(self.poll_s)  # the server is not up yet (or between runs)
                    continue
                if reply["pair"] is None:
                    self._stop_event.wait(self.poll_s)
                    continue
                pair_id = reply["pair"]["id"]
                self._request("/api/answer", {"pair": pair_id, "answer": self.oracle(pair_id), "rater": self.rater})
                self.answered += 1
        except BaseException as e:  # surfaced to the test through .error
            self.error = e

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# `rlkit prefs serve|status`
# ---------------------------------------------------------------------------------------------

def serve_store(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                lease_s: float = 120.0, until_done: bool = False, on_url: Callable[[str], None] | None = None
                ) -> dict[str, Any]:
    """Serve a run's unanswered pairs (rendering missing clips) until Ctrl-C, or until all are answered."""
    store = PreferenceStore(run_dir)
    try:
        queue = LabelQueue(store, lease_s)
        open_ids = [p for p in store.pairs if p not in store.resolved]
        queue.open_round(max(store.rounds) if store.rounds else 0, open_ids, status="serving a stored run")
        with PrefsServer(queue, host, port, token) as server:
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
    serve.set_defaults(func=_cmd_serve)
    status = sub.add_parser("status", help="how many pairs are stored and answered, by round and rater")
    status.add_argument("run_dir", metavar="RUN_DIR")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_cmd_status)


def _cmd_serve(args: argparse.Namespace) -> int:
    progress = serve_store(args.run_dir, args.host, args.port, args.token, args.lease, args.until_done)
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
