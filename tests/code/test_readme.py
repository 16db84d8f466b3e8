"""The README's shell blocks work as written.

- Every block is marked (`ci`, `full`, `manual`), and every command of every block names things
  that exist: `dore` sub-commands and their options, `make` targets, repository files, Prefect
  deployments.
- The `ci` blocks (the first hour: the main job, serving it and calling it with curl, a Prefect run
  beside it, DVC status and plots; conversion, validation, scoring; torchrun; DVC by hand) run as
  written, in one shell, in a fresh copy of the checkout with the main job shrunk
  (`scripts/readme_shell.py`). At the end the main job's DVC stages are still up to date and the
  served model is still the main job's.
"""

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

from dore.cli import app
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("readme_shell", REPO / "scripts" / "readme_shell.py")
readme_shell = importlib.util.module_from_spec(_spec)
sys.modules["readme_shell"] = readme_shell  # dataclasses look their module up
_spec.loader.exec_module(readme_shell)

BLOCKS = readme_shell.parse(REPO / "README.md")
COMMANDS = [(block, command) for block in BLOCKS for command in block.commands()]
PLACEHOLDER = re.compile(r"<[a-z]+>|\.\.\.|^[A-Z]+$")


def words_of(command: str) -> list[list[str]]:
    """The simple commands of a command line (split at pipes, `&&`, `;`, `&`), as words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    parts, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            parts.append(current)
            current = []
        else:
            current.append(token)
    return [p for p in [*parts, current] if p]


def dore_invocations() -> list[tuple[int, list[str]]]:
    found = []
    for block, command in COMMANDS:
        for words in words_of(command):
            if words[0] == "dore":
                found.append((block.line, words[1:]))
            elif words[:3] in (["python", "-m", "dore.cli"],):
                found.append((block.line, words[3:]))
            elif words[0] in ("torchrun", "accelerate") and "dore.cli" in words:
                found.append((block.line, words[words.index("dore.cli") + 1:]))
    return found


def test_every_block_is_marked_and_some_run_in_ci():
    assert BLOCKS, "no ```bash block found"
    tiers = {b.tier for b in BLOCKS}
    assert "ci" in tiers
    assert all(b.why for b in BLOCKS if b.tier == "manual"), "a manual block must say why"


def test_marker_parser_refuses_an_unmarked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- shell: ci -->\n```bash\necho a\n```\n\n```bash\necho b\n```\n")
    with pytest.raises(ValueError, match=r"README.md:8: a ```bash block without"):
        readme_shell.parse(readme)


def test_commands_join_continuations_and_multiline_quotes():
    block = readme_shell.Block(1, "h", "ci", "", "a --x 1 \\\n    --y 2   # note\ncurl -d '{\"a\":\n 1}'\n# only a comment\n")
    assert block.commands() == ["a --x 1 --y 2", "curl -d '{\"a\":\n 1}'"]


@pytest.mark.parametrize("line,args", dore_invocations(), ids=lambda v: str(v) if isinstance(v, int) else " ".join(v)[:40])
def test_dore_commands_and_options_exist(line, args):
    """Each `dore ...` of the README names a real sub-command and only options it has."""
    group = typer.main.get_command(app)
    command = group  # typer's own (vendored) click objects
    ctx = group.context_class(group)
    rest = [a for a in args if a != "--debug"]
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"README.md:{line}: `dore {' '.join(args)}`: no sub-command {rest[0]!r}"
        command, rest = sub, rest[1:]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    if command.context_settings.get("ignore_unknown_options"):  # passed through to `python -m dore.<name>`
        usage = subprocess.run([sys.executable, "-m", f"dore.{command.name}", "--help"], capture_output=True,
                               text=True, check=True).stdout
        known |= set(re.findall(r"--[\w-]+", usage))
    for word in rest:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in known, f"README.md:{line}: `dore {' '.join(args)}`: {command.name} has no {option}"


def test_make_targets_files_and_deployments_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    flow_names = {}  # "flows/train.py:train_dore" -> "train-dore"
    for path in (REPO / "flows").glob("*.py"):
        for name, function in re.findall(r'@flow\(name="([\w-]+)".*?\)\s*def (\w+)', path.read_text(), flags=re.S):
            flow_names[f"flows/{path.name}:{function}"] = name
    deployments = {f"{flow_names[d['entrypoint']]}/{d['name']}"
                   for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert "train-dore/docred" in deployments and "extract-dore/corpus" in deployments
    for block, command in COMMANDS:
        for words in words_of(command):
            where = f"README.md:{block.line}: `{' '.join(words)[:80]}`"
            if words[0] == "make":
                assert all(t in targets for t in words[1:]), f"{where}: no such make target"
            if words[0] in ("python", "bash") and len(words) > 1 and words[1].endswith((".py", ".sh")):
                assert (REPO / words[1]).exists(), f"{where}: no such file"
            if words[:3] == ["prefect", "deployment", "run"]:
                assert words[3] in deployments, f"{where}: no deployment {words[3]} in prefect.yaml"


# --- the ci blocks, run -------------------------------------------------------------------------

def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def fresh_copy(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) as a new git repository, beside a
    `shared` link, with a `.venv` that points at this environment's."""
    repo = dest / "repo"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (dest / "shared").symlink_to(SHARED_DATA.parent)
    venv = repo / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".installed").touch()  # newer than the copied requirements: make installs nothing
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


@pytest.mark.slow
def test_ci_blocks_run_as_written(tmp_path, shared_data):
    for port in (3000, 4200):
        assert port_free(port), f"port {port} is taken: the README's blocks use it; stop what listens there"
    repo = fresh_copy(tmp_path)
    script = readme_shell.script(BLOCKS, "ci", tiny=True)
    script += "\necho '::: after the walk'\ndvc status package@docred --with-deps > dvc_status.txt\n"
    (repo / "walk.sh").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BENTOML_", "DORE_", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp_path / "home"), BENTOML_HOME=str(repo / ".bentoml"),  # the copy's store, not this checkout's
               PATH=f"{repo / '.venv' / 'bin'}:{env['PATH']}", DORE_TINY_CORPUS=os.environ["DORE_TINY_CORPUS"],
               OMP_NUM_THREADS="1")
    (tmp_path / "home").mkdir()
    try:
        walk = subprocess.run(["bash", "walk.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        subprocess.run(["make", "prefect-down"], cwd=repo, env=env, capture_output=True, timeout=120)
        subprocess.run(["pkill", "-f", f"{repo}"], capture_output=True)
    log = walk.stdout + walk.stderr
    assert walk.returncode == 0, f"the README's ci blocks failed (status {walk.returncode}):\n{log[-6000:]}"
    # the main job is untouched by the Prefect run and the by-hand commands
    assert "Data and pipelines are up to date." in (repo / "dvc_status.txt").read_text()
    main_tag = json.loads((repo / "artifacts" / "docred" / "package.json").read_text())["tag"]
    served = re.findall(r'"tag":\s*"(dore-docred:[a-z0-9]+)"', log)
    assert served and served[0] == main_tag, f"bentoml serve served {served[:1]}, the main job packaged {main_tag}"
    runs = list((repo / "runs").glob("*/docred/model"))
    assert runs, "the Prefect run wrote no run directory of its own"
    assert (repo / "result.json").exists() and (repo / "reports").is_dir()
