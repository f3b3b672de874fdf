"""IPython startup code for the kernels that run the notebooks under test (notebooks/conftest.py
installs it): a notebook cell fails where

- kit code prints a warning (raised or triggered by a call that passes through a kit module), or
- a figure would be drawn twice: a matplotlib Figure as a cell's value (shown as the value and
  again by the inline backend), or a figure shown with `display(fig)` and left open (the inline
  backend draws every figure still open when the cell ends).

Each cell's last expression is passed through `__kit_cell_end__`, which checks both and returns
the value unchanged, so what the notebook displays does not change.
"""
import ast
import importlib.util
import os
import sys
import warnings

import IPython
import IPython.display

_KIT = os.path.dirname(importlib.util.find_spec("kit").origin) + os.sep
_shown: set[int] = set()           # ids of figures displayed explicitly in this cell


def _kit_frame():
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_KIT):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


_print_warning = warnings.showwarning


def _showwarning(message, category, filename, lineno, file=None, line=None):
    where = _kit_frame()
    if where:
        raise RuntimeError(f"kit code printed a warning: {category.__name__}: {message} ({filename}:{lineno}, "
                           f"reached from {where}). Fix the call in the kit, or filter it there with a reason.")
    _print_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _showwarning

_display = IPython.display.display


def _recording_display(*objs, **kw):
    figure = sys.modules.get("matplotlib.figure")
    _shown.update(id(o) for o in objs if figure and isinstance(o, figure.Figure))
    return _display(*objs, **kw)


IPython.display.display = _recording_display
IPython.core.display_functions.display = _recording_display


def __kit_cell_end__(value=None):
    shown, figure = set(_shown), sys.modules.get("matplotlib.figure")
    _shown.clear()
    if figure is None:
        return value
    if isinstance(value, figure.Figure):
        raise RuntimeError("This cell's value is a matplotlib Figure: it is drawn twice (as the value and by the "
                           "inline backend). Assign it (fig = ...) or end the line with ';'.")
    import matplotlib.pyplot as plt
    again = [n for n in plt.get_fignums() if id(plt.figure(n)) in shown]
    if again:
        raise RuntimeError(f"Figure(s) {again} were displayed with display() and left open: the inline backend "
                           "draws them again. Close them after display (plt.close(fig)).")
    return value


class _CellEnd(ast.NodeTransformer):
    """Wrap the cell's last expression (or append a call) in __kit_cell_end__."""

    def visit_Module(self, node):
        call = lambda arg: ast.Call(ast.Name("__kit_cell_end__", ast.Load()), [arg], [])
        if node.body and isinstance(node.body[-1], ast.Expr):
            node.body[-1].value = call(node.body[-1].value)
        else:
            node.body.append(ast.Expr(call(ast.Constant(None))))
        return ast.fix_missing_locations(node)


_ip = IPython.get_ipython()
if _ip is not None:
    _ip.user_ns["__kit_cell_end__"] = __kit_cell_end__
    _ip.user_ns_hidden["__kit_cell_end__"] = __kit_cell_end__
    _ip.ast_transformers.append(_CellEnd())
