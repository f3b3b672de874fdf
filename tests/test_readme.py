"""The README's code (and that of docs/*.md) runs: Python blocks are executed as written, shell
commands are checked for their arguments (a notebook's parameters, a target's existence, the
kit's CLI with --dry-run).

A block preceded by `<!-- readme: signatures -->` needs what this machine lacks (a GPU, the
network): its calls of the kit are bound to the kit's signatures instead of run.
"""
import ast
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
import yaml

import kit
from kit.models import tiny_seed

pytestmark = pytest.mark.slow      # make test-fast skips it

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme: (?P<mode>[\w-]+) -->\s*\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(m["lang"], m["mode"] or "run", m["code"]) for doc in DOCS for m in BLOCK.finditer(doc.read_text())]
PYTHON_RUN = [code for lang, mode, code in BLOCKS if lang == "python" and mode == "run"]
PYTHON_SIGNATURES = [code for lang, mode, code in BLOCKS if lang == "python" and mode == "signatures"]
SHELL = [line for lang, _, code in BLOCKS if lang == "bash"
         for line in code.replace("\\\n", " ").splitlines() if shlex.split(line, comments=True)]


def test_every_block_is_checked():
    assert {lang for lang, _, _ in BLOCKS} <= {"python", "bash"}, "a block in another language is not checked"
    assert {mode for _, mode, _ in BLOCKS} <= {"run", "signatures"}
    assert PYTHON_RUN and SHELL


@pytest.mark.parametrize("code", PYTHON_RUN, ids=lambda c: c.strip().splitlines()[-1][:40])
def test_python_block_runs_as_written(code, tmp_path, monkeypatch):
    from kit import objectives
    monkeypatch.chdir(tmp_path)                       # the block writes runs/ relative to where it runs
    monkeypatch.setattr(objectives, "OBJECTIVES", dict(objectives.OBJECTIVES))   # a block may register one
    exec(compile(code, "README.md", "exec"), {})


def _kit_object(node):
    """The kit object an attribute chain `kit.a.b` names, or None when the chain does not start at kit."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not (isinstance(node, ast.Name) and node.id == "kit"):
        return None
    obj = kit
    for part in parts:
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("code", PYTHON_SIGNATURES, ids=lambda c: c.splitlines()[0][:40])
def test_python_block_binds_to_the_kit_api(code):
    calls = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and _kit_object(n.func) is not None]
    assert calls
    for call in calls:
        fn = _kit_object(call.func)
        inspect.signature(fn).bind(*call.args, **{k.arg: k.value for k in call.keywords})   # TypeError if wrong


def _check_papermill(args):
    notebook, params = ROOT / args[0], None
    assert notebook.is_file() and args[1].endswith(".ipynb"), args
    params = papermill.inspect_notebook(str(notebook))
    rest = args[2:]
    while rest:
        flag = rest.pop(0)
        if flag in ("-p", "--parameters"):
            name, _ = rest.pop(0), rest.pop(0)
            assert name in params, f"{notebook.name} has no parameter {name}"
            assert params[name]["inferred_type_name"] != "list", f"-p passes {name} as text; use -y '{name}: [...]'"
        elif flag in ("-y", "--parameters_yaml"):
            assert set(yaml.safe_load(rest.pop(0))) <= set(params)
        elif flag in ("-f", "--parameters_file"):
            path = ROOT / rest.pop(0)
            assert set(yaml.safe_load(path.read_text())) <= set(params), path
        else:
            raise AssertionError(f"papermill option {flag} is not checked: add it to tests/test_readme.py")


@pytest.mark.parametrize("line", SHELL)
def test_shell_command_is_valid(line, monkeypatch):
    argv = shlex.split(line, comments=True)
    while "=" in argv[0]:                                 # VAR=value prefixes
        name, value = argv.pop(0).split("=", 1)
        assert name == "KIT_TINY_SEED", f"environment variable {name} is not checked"
        assert tiny_seed(value) >= 0
    prog, args = argv[0], argv[1:]
    if prog == "make":
        assert subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True).returncode == 0, line
    elif prog == ".venv/bin/papermill":
        _check_papermill(args)
    elif prog == ".venv/bin/python" and args[:2] == ["-m", "kit"]:
        out = subprocess.run([sys.executable, "-m", "kit", *args[2:], "--dry-run"], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        raise AssertionError(f"README command {line!r} has no check: add one to tests/test_readme.py")
