"""The house rules of docs/ARCHITECTURE.md, checked on the source: one import root, imports in
one direction, no import cycle between modules (imports inside functions included), heavy
libraries only where they are needed, and a package that a user's own `export.py` or
`benchmarks.py` cannot shadow."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each importable module lives in the checkout (pyproject's package-dir).
ROOTS = {"keras_unet": REPO / "keras_unet", "keras_unet.export": REPO / "export",
         "keras_unet.benchmarks": REPO / "benchmarks"}
# Lowest first; a module may import its own level and the levels below, never above.
LEVELS = [
    ("runtime", ("keras_unet.runtime", "keras_unet.console", "keras_unet.datasets", "keras_unet.version",
                 "keras_unet._keras_registration")),
    ("plugin", ("keras_unet.callbacks", "keras_unet.layers", "keras_unet.encoders", "keras_unet.models", "keras_unet.losses",
                "keras_unet.metrics", "keras_unet.data", "keras_unet.quantization",
                "keras_unet.distribution")),
    ("export", ("keras_unet.export",)),
    ("benchmarks", ("keras_unet.benchmarks",)),
    ("cli", ("keras_unet.cli", "keras_unet.commands")),
]
HEAVY = {"tensorflow", "keras", "onnx", "tf2onnx", "matplotlib", "jax", "torch"}
# Module-level imports of heavy libraries are allowed only in the Keras plugin, which is
# what those libraries are for; everything else imports them inside functions.
HEAVY_AT_TOP_ALLOWED = {"plugin"}


def _modules(roots=None):
    found = {}
    for package, folder in (roots or ROOTS).items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.startswith("keras_unet.export") and package == "keras_unet":
                continue
            found.setdefault(name, path)
    return found


def _level(module):
    best = None
    for index, (_, prefixes) in enumerate(LEVELS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def _imports(path, module):
    """(imported module, line, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports inside `if`/`try` at module level run at import too
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(child) for child in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module
            yield name, node.lineno, id(node) in top_level
            for alias in node.names:  # `from keras_unet import export`
                yield f"{name}.{alias.name}", node.lineno, id(node) in top_level


def _import_graph(modules):
    """module -> the project modules it imports, anywhere in the file (inside functions too).

    `from a.b import c` is an edge to the module `a.b.c` when there is one, else to `a.b`; an
    import names the module it loads, not the packages above it.
    """
    graph = {}
    for module, path in modules.items():
        by_line = {}
        for imported, line, _ in _imports(path, module):
            if imported in modules and imported != module:
                by_line.setdefault(line, set()).add(imported)
        graph[module] = {name for names in by_line.values() for name in names
                         if not any(other.startswith(name + ".") for other in names)}
    return graph


def _cycles(graph):
    """The import cycles of `graph`: strongly connected components of more than one module
    (Tarjan's algorithm, iterative), each as a sorted list."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle():
    cycles = _cycles(_import_graph(_modules()))
    assert not cycles, "modules that import each other (directly or around a circle):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_a_planted_circle_is_caught(tmp_path):
    """The cycle check sees a circle closed by an import inside a function."""
    package = tmp_path / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from planted import b\n")
    (package / "b.py").write_text("def later():\n    from planted.c import helper\n    return helper\n")
    (package / "c.py").write_text("import planted.a\n\ndef helper():\n    return 1\n")
    (package / "d.py").write_text("from planted import a, b  # imports the circle, is not in it\n")
    modules = _modules({"planted": package})
    assert _cycles(_import_graph(modules)) == [["planted.a", "planted.b", "planted.c"]]
    (package / "c.py").write_text("def helper():\n    return 1\n")
    assert _cycles(_import_graph(_modules({"planted": package}))) == []


def test_every_module_has_a_level():
    unplaced = [m for m in _modules() if m != "keras_unet" and _level(m) is None]
    assert not unplaced, f"add these modules to LEVELS (and docs/ARCHITECTURE.md): {unplaced}"


def test_imports_run_one_way():
    upward = []
    for module, path in _modules().items():
        own = _level(module)
        if own is None:
            continue
        for imported, line, _ in _imports(path, module):
            target = _level(imported)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(REPO)}:{line} ({LEVELS[own][0]}) imports "
                              f"{imported} ({LEVELS[target][0]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_heavy_libraries_are_imported_where_they_are_needed():
    offenders = []
    for module, path in _modules().items():
        own = _level(module)
        if own is None or LEVELS[own][0] in HEAVY_AT_TOP_ALLOWED:
            continue
        for imported, line, at_top in _imports(path, module):
            if at_top and imported.split(".")[0] in HEAVY:
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {imported} at module level")
    assert not offenders, "\n".join(offenders)


def test_one_top_level_package_is_declared():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {p.split(".")[0] for p in config["packages"]} == {"keras_unet"}
    declared = set(config["packages"])
    on_disk = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert on_disk <= declared, f"packages missing from pyproject.toml: {sorted(on_disk - declared)}"


def _run(code_or_args, cwd, env=None):
    args = code_or_args if isinstance(code_or_args, list) else [sys.executable, "-c", code_or_args]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture()
def shadowing_folder(tmp_path):
    for name in ("export", "benchmarks", "runtime"):
        (tmp_path / f"{name}.py").write_text(f"raise SystemExit('the user\\'s {name}.py was imported')\n")
    return tmp_path


def test_a_users_export_py_does_not_shadow_the_package(shadowing_folder):
    done = _run("import keras_unet, keras_unet.export, keras_unet.benchmarks, keras_unet.runtime; "
                "print(keras_unet.export.__name__, keras_unet.benchmarks.__name__)", shadowing_folder)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["keras_unet.export", "keras_unet.benchmarks"]


def test_help_and_version_are_light(shadowing_folder):
    code = ("import sys; from keras_unet import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit as stop:\n    assert stop.code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(HEAVY)!r}))")
    done = _run(code, shadowing_folder)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "[]", f"--help imported {lines[-1]}"
    assert "usage: keras-unet" in done.stdout and "oneDNN" not in done.stderr
    version = _run([sys.executable, "-m", "keras_unet.cli", "--version"], shadowing_folder)
    from keras_unet.version import __version__

    assert version.stdout.strip() == f"keras-unet {__version__}", version.stderr[-2000:]
