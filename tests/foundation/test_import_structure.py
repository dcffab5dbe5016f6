"""The package's layers, checked on the source: no import circle, no stage importing another stage.

Every `import` counts, including those inside functions: a lazy import still ties two modules
together, it only hides the circle until the function runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# Below the stages: what every stage may use.
SHARED = {"io", "records", "result_file", "stats", "mcq", "models", "safety", "run_layout", "configs", "data"}
# One folder per stage of the recipe; they talk through records and artifacts only.
STAGES = {"curate", "train", "merge", "evaluate", "infer", "redteam", "humaneval"}
# Above the stages: they wire stages together.
TOP = {"recipe", "report", "serve", "cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "aloe").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges[m] |= {n for n in names if n in mods and n != m}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_top_level_package_has_a_layer():
    unknown = {_layer(m) for m in _modules()} - SHARED - STAGES - TOP - {""}
    assert not unknown, f"put {sorted(unknown)} in SHARED, STAGES or TOP of this test"


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_stage_imports_another_stage_or_a_layer_above_it():
    wrong = []
    for m, targets in import_graph().items():
        src = _layer(m)
        for t in targets:
            dst = _layer(t)
            if src == dst or dst in SHARED or dst == "":
                continue
            if src in SHARED or (src in STAGES and (dst in STAGES or dst in TOP)):
                wrong.append(f"{m} imports {t}")
    assert not wrong, "\n".join(sorted(wrong))
