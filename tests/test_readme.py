"""Every fenced ```python block of README.md runs here, as a user would paste it into a script.

Each block runs in this process (imports are warm), as ``__main__``, in a fresh temporary working
directory, so relative paths such as ``data/cp`` or the default ``runs/`` land there. Tracebacks point
at README.md's own line numbers. A block whose first line is ``# continues the script above`` runs
after the block before it, in the same namespace, as the README says.

Long budgets are shrunk by the SUBSTITUTIONS table below, so the README keeps showing the real ones.
Each substitution must match its block: a README edit that makes one stale fails here instead of
silently running the long version. A new block needs no registration; it runs as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
CONTINUES = "# continues the script above"


@dataclass(frozen=True)
class Block:
    id: str  # section slug, e.g. "command-line/from-python" (with -2, -3 for later blocks in one section)
    line: int  # README line of the block's first code line
    source: str


@dataclass(frozen=True)
class Substitution:
    block: str
    pattern: str
    replacement: str
    why: str


SUBSTITUTIONS = [
    # the object API's 50k + 10k steps are minutes; 600 + 200 run every call (learn, save, load, predict, learn).
    Substitution("command-line/from-python", r'preset="auto", seed=0\)',
                 'preset="auto", seed=0, eval_episodes=2, progress=False)',
                 "the README's model evaluates 20 episodes with a progress bar"),
    Substitution("command-line/from-python", r"learn\(50_000\)", "learn(600)", "the README's model trains 50k steps"),
    Substitution("command-line/from-python", r"learn\(10_000\)", "learn(200)", "the README's model trains 10k more"),
    # 40k env steps are minutes of CPU; 2k steps run the same code path (updates start at step 500) in seconds.
    Substitution("command-line/from-python-2", r"total_steps=40_000",
                 "total_steps=2_000, learning_starts=500, eval_episodes=2, progress=False",
                 "the README's DQN run is 40k steps"),
    # 50k steps with an evaluation every 5k are a minute; 1.5k steps with one every 250 stop or finish in seconds.
    Substitution("command-line/callbacks-early-stopping-on-a-plateau", r"total_steps=50_000, eval_every=5_000",
                 "total_steps=1_500, eval_every=250, learning_starts=200, eval_episodes=2, progress=False",
                 "the README's plateau example trains up to 50k steps"),
    # 50 expert episodes are 25k steps to record, replay-verify and convert; 3 exercise every call.
    Substitution("demonstrations/from-python", r"episodes=50,", "episodes=3,",
                 "the README records 50 episodes"),
]

# The slowest blocks (deselected by -m "not slow"). The DQN training block also runs, in the fast suite, as the
# start of the block that continues it.
SLOW = {"command-line/from-python-2"}


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower().replace("`", "")).strip("-")


def readme_blocks(text: str) -> list[Block]:
    """The README's python blocks, in order, named by the section (## and ###) they sit in."""
    blocks, seen = [], {}
    section, subsection = "", ""
    fence = None  # (info string, first code line index, lines) while inside a fenced block
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if line.startswith("```"):
                info, first, lines = fence
                if info == "python":
                    name = f"{section}/{subsection}" if subsection else section
                    seen[name] = seen.get(name, 0) + 1
                    blocks.append(Block(name if seen[name] == 1 else f"{name}-{seen[name]}", first,
                                        "\n".join(lines) + "\n"))
                fence = None
            else:
                fence[2].append(line)
        elif line.startswith("```"):
            fence = (line[3:].strip(), number + 1, [])
        elif line.startswith("## "):
            section, subsection = _slug(line[3:]), ""
        elif line.startswith("### "):
            subsection = _slug(line[4:])
    return blocks


BLOCKS = readme_blocks(README.read_text())


def substituted(block: Block) -> str:
    source = block.source
    for sub in SUBSTITUTIONS:
        if sub.block == block.id:
            source, count = re.subn(sub.pattern, sub.replacement, source)
            assert count, f"README block {block.id} no longer has {sub.pattern!r} ({sub.why}); update SUBSTITUTIONS"
    return source


def chain(index: int) -> list[Block]:
    """The block and, when it continues the script above, the blocks it continues (first first)."""
    blocks = [BLOCKS[index]]
    while blocks[0].source.startswith(CONTINUES):
        assert index > 0, f"README block {blocks[0].id} continues a script, but no python block comes before it"
        index -= 1
        blocks.insert(0, BLOCKS[index])
    return blocks


def test_the_readme_has_the_python_blocks_this_file_expects():
    ids = [block.id for block in BLOCKS]
    assert len(ids) == len(set(ids))
    assert {sub.block for sub in SUBSTITUTIONS} | SLOW <= set(ids), "a substitution names a block that is gone"
    assert {"command-line/from-python", "command-line/from-python-2", "demonstrations/from-python"} <= set(ids)


@pytest.mark.parametrize("index", [
    pytest.param(i, id=block.id, marks=[pytest.mark.slow] if block.id in SLOW else [])
    for i, block in enumerate(BLOCKS)
])
def test_readme_python_block(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for block in chain(index):
        # pad with newlines so a traceback names README.md and the line a reader sees
        code = compile("\n" * (block.line - 1) + substituted(block), str(README), "exec")
        exec(code, namespace)


def test_install_commands_are_the_ones_that_work():
    """The checkout's two commands exist, and the pip users' second step is the one rlkit's errors print."""
    from rlkit.errors import IMITATION_INSTALL

    text = README.read_text()
    for command, script in [("bash .ci/rlkit quickstart", ".ci/rlkit"), ("bash .ci/test", ".ci/test")]:
        assert re.search(rf"^{re.escape(command)}\s", text, re.MULTILINE), command
        assert (README.parent / script).is_file(), script
    assert re.search(rf"^{re.escape(IMITATION_INSTALL)}\s", text, re.MULTILINE)
