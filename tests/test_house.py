"""The house's layout: the public face, the layers, and no reaching into private names."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import emailwb

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "emailwb"


def test_the_public_face_names_what_a_notebook_needs_and_loads_it_lazily() -> None:
    code = (
        "import sys, emailwb; heavy = [m for m in ('spacy', 'ipywidgets', 'plotly', "
        "'emailwb.engine.processor') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    assert out == "[]"  # importing the package loads none of them
    for name in (
        "Store",
        "ingest",
        "run_batch",
        "RunConfig",
        "LaunchPanel",
        "compare_runs",
        "results_df",
        "score_runs",
    ):
        assert name in emailwb.__all__
    for name in emailwb.__all__:
        value = getattr(emailwb, name)
        assert getattr(value, "__name__", name) == name  # the real object, not a stand-in
    assert emailwb.RunConfig is importlib.import_module("emailwb.settings").RunConfig


def test_an_unknown_public_name_says_where_to_look() -> None:
    try:
        emailwb.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "emailwb.__all__" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_every_subpackage_opens_with_its_job_and_what_it_may_import() -> None:
    rooms = [p for p in LIBRARY.iterdir() if (p / "__init__.py").exists()]
    assert {p.name for p in rooms} >= {
        "mail",
        "store",
        "llm",
        "facts",
        "engine",
        "quality",
        "ui",
        "testing",
    }
    for room in rooms:
        doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text())) or ""
        assert len(doc.splitlines()) >= 3, room.name
        assert re.search(r"\bmay import\b|\bimport\b", doc, re.IGNORECASE), room.name


def test_the_library_never_imports_the_testing_package() -> None:
    for path in LIBRARY.rglob("*.py"):
        if "testing" in path.relative_to(LIBRARY).parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("emailwb.testing"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("emailwb.testing") for a in node.names), path


#: other objects' private names the library still uses, each with its reason
ALLOWED_PRIVATE = {
    ("ui/charts.py", "fig._widget_data"): "plotly's FigureWidget keeps its state there; "
    "copying a figure into a widget has no public call",
    ("ui/charts.py", "fig._data"): "the same plotly figure copy",
    ("llm/llamabin.py", "os._exit"): "the standard library's immediate exit in a forked child",
}


#: underscored by design: NamedTuple's public methods and Jupyter's display hooks
PROTOCOL = {
    "_asdict",
    "_replace",
    "_fields",
    "_make",
    "_repr_mimebundle_",
    "_repr_html_",
    "_ipython_display_",
}


def test_no_module_reaches_into_another_objects_private_names() -> None:
    found = set()
    for path in LIBRARY.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or node.attr in PROTOCOL:
                continue  # dunders, NamedTuple's API, Jupyter's display protocol
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            text = f"{ast.unparse(owner)}.{node.attr}"
            found.add((str(path.relative_to(LIBRARY)), text))
    unexpected = found - set(ALLOWED_PRIVATE)
    assert not unexpected, sorted(unexpected)


def test_no_import_circle_between_any_two_modules() -> None:
    import grimp  # import-linter's graph builder (the dev extra installs it)

    graph = grimp.build_graph("emailwb", include_external_packages=False)
    modules = sorted(graph.modules)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    circles = []
    for a in modules:
        for b in imports[a]:
            if a < b and graph.chain_exists(importer=b, imported=a):
                circles.append((a, b))
    assert not circles, circles
