"""Import direction: a layer of the package imports only its own layer and the layers below it.

Layers, lowest first: ``core`` < ``data`` < ``nn`` < ``electronic`` < {``training``,
``interface``} < ``cli``. ``training`` and ``interface`` are siblings and import neither each
other. No module imports the package root ``ase_phisnet`` (its ``__init__`` is the lazy public
API, exempt itself): a root import would pull the top layer into a low one. Every ``import`` and
``from ... import`` counts, at module level or inside a function, absolute or relative, and so
does ``importlib.import_module("ase_phisnet....")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ase_phisnet

PACKAGE = "ase_phisnet"
ROOT = Path(ase_phisnet.__file__).resolve().parent
#: Rank of each layer: a module may import its own rank and lower ranks.
LAYERS = {"core": 0, "data": 1, "nn": 2, "electronic": 3, "training": 4, "interface": 4,
          "cli": 5}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, root: Path = ROOT) -> list[tuple[int, str, str]]:
    """``(line, imported module, the statement)`` for every import of ``path``: for
    ``from X import a`` both ``X.a`` (``a`` may be a submodule or a name in ``X``); relative
    imports resolved against the module's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.append((node.lineno, f"{module}.{alias.name}", ast.unparse(node)))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                             "__import__")):
            found.append((node.lineno, node.args[0].value, ast.unparse(node)))
    return found


def layer_of(name: str) -> str | None:
    """The layer of module ``name`` (``ase_phisnet.data.dataset`` -> ``data``); ``None`` for
    the package root itself and for names outside the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    return parts[1]


def is_module(name: str, root: Path) -> bool:
    """Whether ``name`` (``ase_phisnet.x``) is a module or package of the source tree."""
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def sources(root: Path) -> list[Path]:
    """Every module of the package but its root ``__init__`` (the lazy public API)."""
    return sorted(p for p in root.rglob("*.py") if p != root / "__init__.py")


def violations(root: Path = ROOT) -> list[str]:
    """One line per import against the layering: ``file:line: statement (why)``."""
    found = []
    for path in sources(root):
        own = layer_of(module_name(path, root))
        for line, name, statement in imported_names(path, root):
            if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
                continue
            where = f"{path.relative_to(root.parent)}:{line}: {statement}"
            target = layer_of(name)
            if target is None or (name.count(".") == 1 and not is_module(name, root)):
                # `import ase_phisnet` or `from ase_phisnet import <not a module>`
                found.append(f"{where} (imports the package root {PACKAGE})")
            elif target not in LAYERS:
                found.append(f"{where} (imports {name}, outside every layer)")
            elif LAYERS[target] > LAYERS[own]:
                found.append(f"{where} (layer {own} imports the higher layer {target})")
            elif LAYERS[target] == LAYERS[own] and target != own:
                found.append(f"{where} (sibling layers {own} and {target})")
    return list(dict.fromkeys(found))  # one line per statement, not per imported name


def test_every_module_belongs_to_a_layer():
    modules = sources(ROOT)
    unknown = sorted({str(p.relative_to(ROOT.parent)) for p in modules
                      if layer_of(module_name(p)) not in LAYERS})
    assert not unknown, f"modules outside every layer (add them to LAYERS): {unknown}"
    assert len(modules) > 30  # the walk found the package


def test_layers_import_only_their_own_and_lower_layers():
    found = violations()
    assert not found, "import direction violated:\n" + "\n".join(found)


def test_the_check_names_file_line_and_import_of_each_violation(tmp_path):
    """The checker on a made-up package: each kind of violation, at module level and inside
    functions, absolute and relative, is reported; allowed imports are not."""
    root = tmp_path / PACKAGE
    files = {
        "__init__.py": "from ase_phisnet.cli import main\n",  # the public API: exempt
        "core/__init__.py": "",
        "core/so3.py": "import numpy\nfrom ase_phisnet.core import basis\n",
        "core/basis.py": "from ase_phisnet import __version__\n",
        "data/__init__.py": "",
        "data/dataset.py": "def f():\n    from ..nn import network\n",
        "nn/__init__.py": "",
        "nn/network.py": "from ase_phisnet.core.so3 import wigner_D\nfrom . import heads\n",
        "nn/heads.py": "import importlib\nimportlib.import_module('ase_phisnet.electronic')\n",
        "electronic/__init__.py": "",
        "training/__init__.py": "",
        "training/ship.py": "from ase_phisnet.interface.potentials import potential_path\n",
        "interface/__init__.py": "",
        "interface/potentials.py": "import ase_phisnet\nfrom ase_phisnet.cli import main\n",
        "cli.py": "from ase_phisnet.training import ship\nfrom ase_phisnet import nn\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert violations(root) == [
        ("ase_phisnet/core/basis.py:1: from ase_phisnet import __version__ "
         "(imports the package root ase_phisnet)"),
        ("ase_phisnet/data/dataset.py:2: from ..nn import network "
         "(layer data imports the higher layer nn)"),
        ("ase_phisnet/interface/potentials.py:1: import ase_phisnet "
         "(imports the package root ase_phisnet)"),
        ("ase_phisnet/interface/potentials.py:2: from ase_phisnet.cli import main "
         "(layer interface imports the higher layer cli)"),
        ("ase_phisnet/nn/heads.py:2: importlib.import_module('ase_phisnet.electronic') "
         "(layer nn imports the higher layer electronic)"),
        ("ase_phisnet/training/ship.py:1: from ase_phisnet.interface.potentials import "
         "potential_path (sibling layers training and interface)"),
    ]
