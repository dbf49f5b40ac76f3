"""The package's layers import only downwards: util is the lowest and names nothing above it,
the model, data and evaluator packages build on util alone, and so on up to continual."""

import ast
from fixtures_continual import ROOT

PACKAGE = ROOT / "nanodet"
# package -> the packages it may import (besides itself)
ALLOWED = {
    "util": set(),
    "model": {"util"},
    "data": {"util"},
    "evaluator": {"util"},
    "optim": {"util"},
    "trainer": {"util", "model", "data", "evaluator", "optim"},
    "deploy": {"util", "model", "data", "evaluator", "trainer"},
    "continual": {"util", "model", "data", "evaluator", "optim", "trainer"},
}


def imported_packages(source: str, module: str) -> set:
    """The nanodet subpackages a module (``nanodet.util.config``, a package's ``...__init__``)
    imports, at its top or inside functions, or names for importlib."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to the module's package
                base = module.split(".")[:-node.level]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("nanodet."):
            names = [node.value]  # a module named for importlib
        else:
            continue
        found |= {name.split(".")[1] for name in names if name.startswith("nanodet.") and len(name.split(".")) > 1}
    return found


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for target in imported_packages(path.read_text(), module) - allowed - {package}:
                wrong.append(f"{path.relative_to(ROOT)} imports nanodet.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_finds_upward_imports_lazy_relative_and_by_name():
    source = ("from .config import CfgNode\n"
              "def f():\n    from ..trainer.compile import compile_mode\n    return 'nanodet.model.arch'\n")
    assert imported_packages(source, "nanodet.util.probe") == {"util", "trainer", "model"}
    assert imported_packages("from ..util.config import x\nfrom .arch import ARCHS\n", "nanodet.model.__init__") == \
        {"util", "model"}
