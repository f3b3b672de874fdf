"""The setup contract: environment.yml mirrors pyproject, notebooks follow the conventions."""
import json
import re
import tomllib

import yaml

from kit.paths import NOTEBOOKS_DIR, ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["dev"]) | set(extras["lab"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # the setup recipe installs torch's exact CPU build, inside the library's range
    assert "torch>=2.13,<2.14" in wanted and "torch==2.13.0" in pip and "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert set(pip) - {"-e .", "torch==2.13.0"} == wanted - {"torch>=2.13,<2.14"}
    assert "-e ." in pip


def _notebooks():
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_follow_the_conventions():
    readme = (ROOT / "README.md").read_text()
    assert _notebooks(), "no notebooks found"
    for path in _notebooks():
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name}: first cell must say what it asks"
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell must be tagged"
        for line in "".join(code[0]["source"]).splitlines():   # literal, annotated, commented
            assert re.match(r"^[A-Z_0-9]+: \w+ = .+  # .+$", line), f"{path.name}: parameter line {line!r}"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
            f"{path.name}: commit notebooks without outputs"
        assert "assert " in "".join(code[-1]["source"]), f"{path.name}: last cell must assert its claims"
        assert path.name in readme, f"{path.name} missing from the README's notebook index"


def test_claim_bearing_notebooks_replicate_and_end_with_their_claims():
    from kit import claims, replicate
    for stem in replicate.NOTEBOOKS.values():
        nb = json.loads((NOTEBOOKS_DIR / f"{stem}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        params = "".join(code[0]["source"])
        assert "TINY_SEEDS: list = []" in params and "SEEDS: list = [0, 1, 2]" in params, stem
        text = "".join("".join(c["source"]) for c in code)
        assert "claims.Ledger(MODEL)" in text and "claims.conclusions(" in text and "observations=ledger.rows" in text, stem
        measured = [c.id for c in claims.CLAIMS.values() if c.notebook == stem]
        assert measured and all(f'"{cid}"' in text for cid in measured), (stem, measured)   # every claim is measured
