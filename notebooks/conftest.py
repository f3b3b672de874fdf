"""Under pytest, every notebook kernel loads tests/notebook_guard.py first: a cell fails where kit
code prints a warning or a figure would be drawn twice (see that file)."""
import os
import shutil
import tempfile
from pathlib import Path


def ipython_dir_with_guard() -> str:
    """A fresh IPython directory whose default profile starts with the guard."""
    folder = Path(tempfile.mkdtemp(prefix="kit-ipython-"))
    startup = folder / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "tests" / "notebook_guard.py", startup / "00-kit-guard.py")
    return str(folder)


os.environ["IPYTHONDIR"] = ipython_dir_with_guard()
