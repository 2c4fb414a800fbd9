"""Faults of preference labelling: a copied run's files, other web pages in the rater's browser, malformed requests.

Trust (docs/reliability.md, "Loading never executes code"): a run's ``prefs/`` may come from someone else, so a
module it names is imported only when the user names it, and nothing rlkit writes, appends to or trims there may
reach a file outside it. People in the loop: only the server's own page may take or answer pairs (a per-server
secret, the Origin), and a malformed request gets a 4xx and one log line, never a traceback or a stored answer.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlkit.apps.prefs_web import (
    MAX_BODY_BYTES,
    SECRET_HEADER,
    LabelQueue,
    PreferenceStore,
    PrefsServer,
    page_secret,
)
from rlkit.errors import RLKitError
from rlkit.spaces import space_to_json

PAIRS = 3
EVIL_MODULE = '''
import pathlib, os
pathlib.Path(os.environ["RLKIT_TEST_MARKER"]).write_text("imported")
'''


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlkit: error: "), stderr
    return lines[0]


def make_run(run_dir: Path, env_id: str = "Pendulum-v1") -> list[str]:
    """A run with one committed round of ``PAIRS`` pairs (made-up fragments: no env, no clips); its pair ids."""
    store = PreferenceStore.create(run_dir, {
        "env_id": env_id, "env_kwargs": {}, "fragment_length": 2, "fps": 30,
        "observation_space": space_to_json(gym.spaces.Box(-8, 8, (3,), np.float32)),
        "action_space": space_to_json(gym.spaces.Box(-2, 2, (1,), np.float32))}, env_id=env_id)
    ids = [f"0000-{i:04d}-{secrets.token_hex(8)}" for i in range(PAIRS)]
    pairs = [{"pair": pair_id, "left_fragment": 1, "fragments": [{"seed": 1, "start": 0, "end": 2},
                                                                  {"seed": 2, "start": 0, "end": 2}]}
             for pair_id in ids]
    arrays = {f"{k}{w}": np.zeros((PAIRS, 3 if k == "obs" else 2, *shape), np.float32)
              for w in (1, 2) for k, shape in (("obs", (3,)), ("acts", (1,)), ("rews", ()))}
    arrays.update(prefix_acts=np.zeros((4 * PAIRS, 1), np.float32), prefix_offsets=np.arange(0, 4 * PAIRS + 1, 2))
    store.add_round(0, pairs, arrays)
    store.close()
    return ids


@pytest.fixture
def served(tmp_path):
    """A label server on 127.0.0.1 whose log lines are collected, with a short read timeout."""
    ids = make_run(tmp_path / "run")
    store = PreferenceStore(tmp_path / "run")
    queue = LabelQueue(store)
    queue.open_round(0, ids)
    for pair_id in ids:
        queue.mark_ready(pair_id)
    log: list[str] = []
    server = PrefsServer(queue, port=0, request_timeout_s=0.5, log=log.append).start()
    yield server, ids, log
    server.stop()
    store.close()


def raw_request(port: int, data: bytes, half_close: bool = False, timeout_s: float = 5.0) -> tuple[int | None, bytes]:
    """Send ``data`` as is; (status or None when the server closed without a reply, the whole reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(data)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    first = reply.split(b"\r\n", 1)[0].split()
    return (int(first[1]) if len(first) >= 2 and first[1].isdigit() else None), reply


def answer_request(port: int, secret: str, body: bytes, length: str | None = None, extra: str = "") -> bytes:
    length_header = f"Content-Length: {len(body) if length is None else length}\r\n" if length != "" else ""
    return (f"POST /api/answer?rater=mallory HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\n{SECRET_HEADER}: {secret}\r\n{length_header}{extra}\r\n"
            ).encode() + body


def post_answer(server: PrefsServer, body: dict, headers: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/api/answer?rater=mallory", body=json.dumps(body),
                 headers={"Content-Type": "application/json", **headers})
    status = conn.getresponse().status
    conn.close()
    return status


# ---------------------------------------------------------------------------------------------
# Item 3: a module named in the run's own files is imported only when the user names it
# ---------------------------------------------------------------------------------------------

def test_prefs_serve_does_not_import_the_module_named_in_meta_json(tmp_path, monkeypatch, faults):
    run_dir, mods, marker = tmp_path / "run", tmp_path / "mods", tmp_path / "imported.txt"
    make_run(run_dir)
    mods.mkdir()
    (mods / "evilmod.py").write_text(EVIL_MODULE)
    meta_path = run_dir / "prefs" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "env_id": "evilmod:Pendulum-v1"}))
    env = {**os.environ, "PYTHONPATH": f"{mods}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RLKIT_TEST_MARKER": str(marker), "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = subprocess.Popen([sys.executable, "-m", "rlkit.apps.cli", "prefs", "serve", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 30  # the old code imported it, then served forever
        while proc.poll() is None and not marker.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert not marker.exists(), "rlkit prefs serve imported the module named in prefs/meta.json"
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2
    line = one_line_error(stderr)
    assert "evilmod:Pendulum-v1" in line and "imports code" in line and "--env evilmod:Pendulum-v1" in line
    # the reader in-process: refused without the user's word, imported with it
    store = PreferenceStore(run_dir)
    with pytest.raises(RLKitError, match="imports code"):
        store._env(None)
    store.close()
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv("RLKIT_TEST_MARKER", str(marker))
    store = PreferenceStore(run_dir, env_id="evilmod:Pendulum-v1")  # `rlkit prefs serve RUN --env evilmod:...`
    try:
        store._env(None)
        assert marker.exists()
    finally:
        store.close()
        sys.modules.pop("evilmod", None)
    faults.held("code-importing names refused", 1)


@pytest.mark.parametrize("field, value, message", [
    ("file", "../../../outside.npz", "names another file than rounds/0000.npz"),
    ("pair", "../../../outside", "without a plain id"),
])
def test_a_rounds_line_cannot_name_a_file_or_a_clip_outside_the_run(tmp_path, field, value, message, faults):
    ids = make_run(tmp_path / "run")
    rounds = tmp_path / "run" / "prefs" / "rounds.jsonl"
    record = json.loads(rounds.read_text())
    if field == "file":
        record["file"] = value
    else:
        record["pairs"][0]["pair"] = value  # would become videos/../../../outside-left.mp4
    rounds.write_text(json.dumps(record) + "\n")
    with pytest.raises(RLKitError, match=message) as error:
        PreferenceStore(tmp_path / "run")
    assert "\n" not in str(error.value) and str(rounds) in str(error.value)
    assert ids and not (tmp_path / "outside-left.mp4").exists()
    faults.held("malicious files refused", 1)


def test_a_round_file_with_pickled_or_misshapen_arrays_is_refused_in_one_line(tmp_path, faults):
    import hashlib
    import io

    ids = make_run(tmp_path / "run")
    rounds = tmp_path / "run" / "prefs" / "rounds.jsonl"
    cases = [({"obs1": np.array([{"pickled": "object"}], dtype=object)}, "numeric arrays"),
             ({"obs1": np.zeros((1, 3))}, "lacks the arrays")]
    for arrays, message in cases:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # a checksum that matches: made by whoever made the copy
        (tmp_path / "run" / "prefs" / "rounds" / "0000.npz").write_bytes(buffer.getvalue())
        record = {**json.loads(rounds.read_text()), "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
        rounds.write_text(json.dumps(record) + "\n")
        store = PreferenceStore(tmp_path / "run", write=False)
        with pytest.raises(RLKitError, match=message) as error:
            store.fragment(ids[0], 1)
        assert "\n" not in str(error.value) and "0000.npz" in str(error.value)
    faults.held("damaged labelling files refused", len(cases))


# ---------------------------------------------------------------------------------------------
# Item 4: a symlink in the run never lets rlkit write, trim or read a file outside it
# ---------------------------------------------------------------------------------------------

VICTIM = b"someone's committed line\nand a last line without newline"


def plant_symlinked_answers(tmp_path: Path) -> tuple[Path, Path]:
    run_dir, victim = tmp_path / "run", tmp_path / "victim.txt"
    make_run(run_dir)
    victim.write_bytes(VICTIM)  # the torn-tail trim would cut its last line
    (run_dir / "prefs" / "answers.jsonl").symlink_to(victim)
    return run_dir, victim


def test_prefs_serve_refuses_a_symlinked_answers_file_and_leaves_its_target_alone(tmp_path, faults):
    run_dir, victim = plant_symlinked_answers(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "rlkit.apps.cli", "prefs", "serve", str(run_dir), "--port", "0",
                           "--until-done"], capture_output=True, text=True, timeout=60)
    assert victim.read_bytes() == VICTIM
    assert proc.returncode == 2 and "answers.jsonl is a symbolic link" in one_line_error(proc.stderr)
    faults.held("symlinks where rlkit writes or reads refused", 1)


def test_resumed_trainer_refuses_a_symlinked_answers_file_and_leaves_its_target_alone(tmp_path, faults):
    from types import SimpleNamespace

    from rlkit.agents.preference import PreferenceConfig, start_web_rater

    run_dir, victim = plant_symlinked_answers(tmp_path)
    cfg = PreferenceConfig(env_id="Pendulum-v1", fragment_length=2, rater="web", web_port=0, run_dir=str(run_dir))
    env = gym.make("Pendulum-v1")
    venv = SimpleNamespace(observation_space=env.observation_space, action_space=env.action_space)
    with pytest.raises(RLKitError, match="answers.jsonl is a symbolic link") as error:
        start_web_rater(cfg, run_dir, venv, None, None)  # what `train preference --resume` runs before serving
    assert "\n" not in str(error.value) and victim.read_bytes() == VICTIM
    faults.held("symlinks where rlkit writes or reads refused", 1)


def test_an_answers_file_swapped_for_a_symlink_while_serving_is_not_appended_to(served, tmp_path, faults):
    server, ids, log = served
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    answers = server.store.root / "answers.jsonl"
    answers.unlink(missing_ok=True)
    answers.symlink_to(victim)
    status = post_answer(server, {"pair": ids[0], "answer": "left"}, {SECRET_HEADER: server.secret})
    assert status == 400 and victim.read_bytes() == VICTIM and not server.store.answers
    assert len(log) == 1 and "symbolic link" in log[0]
    faults.held("symlinks where rlkit writes or reads refused", 1)


def test_a_symlinked_clip_is_neither_served_nor_rendered_over(served, tmp_path, faults):
    server, ids, _ = served
    victim = tmp_path / "private.key"
    victim.write_bytes(b"SECRET KEY MATERIAL")
    clip = server.store.video_path(ids[0], "left")
    clip.symlink_to(victim)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", f"/video/{ids[0]}/left.mp4")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status >= 400 and b"SECRET KEY" not in body
    with pytest.raises(RLKitError, match="symbolic link"):
        server.store.render_pair(ids[0])
    assert victim.read_bytes() == b"SECRET KEY MATERIAL"
    faults.held("symlinks where rlkit writes or reads refused", 1)


# ---------------------------------------------------------------------------------------------
# Item 5: only the server's own page may take or answer pairs
# ---------------------------------------------------------------------------------------------

def test_a_cross_site_post_without_the_page_secret_stores_nothing(served, faults):
    server, ids, log = served
    base = f"http://127.0.0.1:{server.port}"
    assert post_answer(server, {"pair": ids[0], "answer": "left"}, {}) == 403  # what another site can send
    assert post_answer(server, {"pair": ids[0], "answer": "left"}, {SECRET_HEADER: "guess"}) == 403
    assert post_answer(server, {"pair": ids[0], "answer": "left"},  # the secret, yet sent by another page
                       {SECRET_HEADER: server.secret, "Origin": "http://evil.example"}) == 403
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/api/next?rater=mallory")  # taking a pair holds it from the real rater: state-changing
    assert conn.getresponse().status == 403
    conn.close()
    assert not server.store.answers and len(log) == 4 and all(" 403 " in line for line in log)
    # the server's own page carries the secret, and its requests (Origin: this server) are taken
    assert page_secret(base + "/") == server.secret
    assert post_answer(server, {"pair": ids[0], "answer": "left"},
                       {SECRET_HEADER: server.secret, "Origin": base}) == 200
    assert [a["pair"] for a in server.store.answers] == [ids[0]]
    faults.held("cross-site requests refused", 4)


def test_each_server_start_has_its_own_secret_and_pair_ids_are_unguessable(tmp_path):
    from rlkit.apps.preference_web import WebGatherer
    from tests.test_prefs_web import make_store

    store, pairs, log = make_store(tmp_path, 3)
    queue = LabelQueue(store)
    first, second = PrefsServer(queue, port=0), PrefsServer(queue, port=0)
    assert first.secret != second.secret and len(first.secret) >= 32
    first.httpd.server_close()
    second.httpd.server_close()
    ids = WebGatherer(store, queue, log, np.random.default_rng(0)).commit_round(0, pairs)
    assert all(len(pair_id.split("-")[2]) == 16 for pair_id in ids)  # 64 random bits after round and index
    assert len(set(ids)) == 3 and "0000-0000" not in store.pairs
    store.close()


# ---------------------------------------------------------------------------------------------
# Item 6: malformed requests get a 4xx and one log line; an answer is stored only from a whole, valid one
# ---------------------------------------------------------------------------------------------

def test_malformed_answer_requests_get_a_4xx_and_one_log_line(served, capsys, faults):
    server, ids, log = served
    good = json.dumps({"pair": ids[0], "answer": "left"}).encode()
    cases = [  # (what is sent, half-close, expected status, what the log line says)
        (answer_request(server.port, server.secret, good, length="abc"), False, 400, "not one byte count"),
        (answer_request(server.port, server.secret, good, length="-1"), True, 400, "not one byte count"),
        (answer_request(server.port, server.secret, b"[" * 5000), False, 413, "at most"),  # the body
        (answer_request(server.port, server.secret, b"[" * 2000), False, 400, "nested deeper"),  # under the size cap
        (answer_request(server.port, server.secret, b'{"pair": [[[[{"a": 1}]]]]}'), False, 400, "nested deeper"),
        (answer_request(server.port, server.secret, good, length=""), True, 411, "Content-Length"),
        (answer_request(server.port, server.secret, good, length=str(len(good) + 50)), True, 400, "body ended"),
        (answer_request(server.port, server.secret, b"x" * 10, length=str(MAX_BODY_BYTES + 1)), True, 413, "at most"),
        (answer_request(server.port, server.secret, b"{not json"), False, 400, "JSON object"),
        (answer_request(server.port, server.secret, good, extra=f"Content-Length: {len(good)}\r\n"), False, 400,
         "not one byte count"),  # two Content-Length headers
    ]
    for number, (data, half_close, want, reason) in enumerate(cases, 1):
        started = time.monotonic()
        status, reply = raw_request(server.port, data, half_close)
        assert status == want, (data[:200], reply[:300])
        assert time.monotonic() - started < 4.0, data[:200]  # no waiting for a body that will not come
        assert len(log) == number and reason in log[number - 1] and f" {want} " in log[number - 1], log
    assert all("\n" not in line for line in log) and "Traceback" not in capsys.readouterr().err
    assert not server.store.answers and not (server.store.root / "answers.jsonl").exists()
    faults.held("malformed HTTP requests refused", len(cases))


def test_a_stalled_body_times_out_with_408_and_stores_nothing(served, faults):
    server, ids, log = served
    good = json.dumps({"pair": ids[0], "answer": "left"}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(answer_request(server.port, server.secret, good[:10], length=str(len(good))))
        started = time.monotonic()
        reply = conn.recv(65536)  # the rest never comes; the server gives up after its 0.5 s read timeout
        waited = time.monotonic() - started
        conn.sendall(good[10:])  # too late: the answer it completes must not be stored
    assert reply.startswith(b"HTTP/1.0 408") and 0.3 < waited < 4.5
    time.sleep(0.1)
    assert not server.store.answers and len(log) == 1 and " 408 " in log[0]
    faults.held("malformed HTTP requests refused", 1)
