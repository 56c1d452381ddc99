"""Run an app until the terminal is handed a frame holding MARKER, then leave at once.

``benchmarks/run.py`` runs this under valgrind to count the instructions the bare
Textual app and the andon dashboard execute up to their first frame. Wall times on a
shared machine swing by a third from one minute to the next; the instruction count
of a run that always stops at the same point does not (repeat runs agree within
0.2%), so it shows small changes that wall times hide.

usage: python benchmarks/firstframe.py MARKER --bare APP.py
       python benchmarks/firstframe.py MARKER --andon [ANDON ARGUMENTS...]

Kept small: it runs inside both measured processes, so anything it imports is
counted for both.
"""

import os
import re
import sys
from importlib.machinery import PathFinder

MARKER = sys.argv[1]
# What a terminal would show of the output: escape sequences removed (as in run.py).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")


class _StopAtMarker:
    """Patches Textual's Linux driver as it is imported (never imports it earlier itself,
    so the app's own import order is kept): after each write, leave if MARKER is shown."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "textual.drivers.linux_driver":
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module
        written: list[str] = []

        def patched(module):  # type: ignore[no-untyped-def]
            exec_module(module)
            write = module.LinuxDriver.write

            def write_then_leave(driver, data: str) -> None:  # type: ignore[no-untyped-def]
                write(driver, data)
                written.append(data)
                if MARKER in _ESCAPES.sub("", "".join(written)):
                    os._exit(0)

            module.LinuxDriver.write = write_then_leave

        spec.loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _StopAtMarker())

if sys.argv[2] == "--bare":
    path = sys.argv[3]
    sys.argv = [path]
    with open(path) as source:
        exec(compile(source.read(), path, "exec"), {"__name__": "__main__", "__file__": path})
else:
    sys.argv = ["andon", *sys.argv[3:]]
    from tui.cli import main

    sys.exit(main())
