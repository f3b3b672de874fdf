"""The guard every notebook runs under in the tests (tests/notebook_guard.py): warnings from kit
code and figures drawn twice fail the cell; ordinary cells are untouched."""
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

_spec = importlib.util.spec_from_file_location("notebooks_conftest", Path(__file__).parents[1] / "notebooks" / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
ipython_dir_with_guard = _conftest.ipython_dir_with_guard

pytestmark = pytest.mark.slow


def run(*cells):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {**os.environ, "IPYTHONDIR": ipython_dir_with_guard()}
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    client.km = client.create_kernel_manager()
    client.start_new_kernel(env=env)
    try:
        client.start_new_kernel_client()
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
    finally:
        client._cleanup_kernel()
    return nb


def test_ordinary_cells_keep_their_values_and_figures():
    nb = run("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\n6 * 7",
             "import warnings\nwarnings.warn('not from the kit')\n'done'")
    value = [o for o in nb.cells[0].outputs if o["output_type"] == "execute_result"]
    assert [o["data"]["text/plain"] for o in value] == ["42"]
    assert any("image/png" in o.get("data", {}) for o in nb.cells[0].outputs)        # drawn once, by the backend
    assert "not from the kit" in nb.cells[1].outputs[0]["text"]                     # others' warnings still print


def test_a_warning_from_kit_code_fails_the_cell():
    code = "import kit\nexec(compile('import warnings; warnings.warn(\"stale call\", FutureWarning)', kit.__file__, 'exec'))"
    with pytest.raises(CellExecutionError, match="kit code printed a warning: FutureWarning: stale call"):
        run(code)


@pytest.mark.parametrize("cell, message", [
    ("import matplotlib.pyplot as plt\nplt.figure()", "value is a matplotlib Figure"),
    ("import matplotlib.pyplot as plt\nfrom IPython.display import display\nfig = plt.figure()\ndisplay(fig)",
     "displayed with display\\(\\) and left open"),
])
def test_a_figure_drawn_twice_fails_the_cell(cell, message):
    with pytest.raises(CellExecutionError, match=message):
        run(cell)


def test_a_figure_closed_after_display_passes():
    nb = run("import matplotlib.pyplot as plt\nfrom IPython.display import display\nfig, ax = plt.subplots()\n"
             "ax.plot([1, 2])\ndisplay(fig)\nplt.close(fig)")
    assert sum("image/png" in o.get("data", {}) for o in nb.cells[0].outputs) == 1
