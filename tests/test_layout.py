"""The package is laid out by role: the runtime at the top of `avemo` (what `load_model().predict`
needs, ONNX Runtime and numpy), training in `avemo.training` (the only importer of torch), the web
app in `avemo.web`. A user who installs avemo to predict never loads training code or torch."""

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

SRC = REPO / "src" / "avemo"


def test_import_avemo_and_avemo_predict_load_nothing_of_training_or_torch():
    code = ("import sys, avemo\n"
            "from avemo.cli import main\n"
            "assert main(['-q', 'predict', 'examples/sample.mp4', '--format', 'json', '--out', sys.argv[1]]) == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith(('avemo.training', 'avemo.web', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__import__("tempfile").mkdtemp()) / "r.json")], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_only_the_training_subpackage_imports_torch():
    outside = [p.relative_to(SRC) for p in SRC.rglob("*.py")
               if "training" not in p.relative_to(SRC).parts and any(n.split(".")[0] == "torch" for n in _imports(p))]
    inside = [p.name for p in (SRC / "training").glob("*.py") if any(n.split(".")[0] == "torch" for n in _imports(p))]
    assert outside == [] and {"model.py", "train.py", "torch_runtime.py"} <= set(inside)
