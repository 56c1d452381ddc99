"""backend/ works without a screen: importing any of it never loads Textual or tui."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, json, pkgutil, sys
import backend
names = sorted(info.name for info in pkgutil.walk_packages(backend.__path__, "backend."))
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "tui", "rich"))
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_importing_every_backend_module_loads_neither_textual_nor_tui() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # The discovery found the real package, not an empty one.
    assert {"backend.store", "backend.store.core", "backend.store.deploys", "backend.store.ranges", "backend.history", "backend.runner", "backend.deployer",
            "backend.config", "backend.world"} <= set(report["modules"])
    loaded = report["loaded"]
    assert not [m for m in loaded if m == "textual" or m.startswith("textual.")], loaded
    assert not [m for m in loaded if m == "tui" or m.startswith("tui.")], loaded


def test_the_check_would_see_textual_if_a_backend_module_imported_it() -> None:
    """Guard against a check that cannot fail: the same probe does see Textual when it is loaded."""
    probe = CHECK.replace("import backend\n", "import backend\nimport textual.app\n", 1)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "textual" in json.loads(done.stdout)["loaded"]
