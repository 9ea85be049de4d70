#!/usr/bin/env python3
"""Lists which sibling modules each module of one Rust module folder imports, and the import
cycles among them.

    python3 scripts/module-imports.py src/datastorage          # edges and cycles
    python3 scripts/module-imports.py src/datastorage --cycles # cycles only

Reads the source as text: `super::x`, `crate::<folder path>::x` and, in the folder's mod.rs,
`self::x` / bare `x::` paths of declared modules. Unit tests (from the first `#[cfg(test)]`) are
left out: they may reach anywhere. Exits 1 when there is a cycle, so it can be a check.
"""

import re
import sys
from pathlib import Path


def module_name(folder: Path, f: Path) -> str:
    return "mod" if f.name == "mod.rs" else f.stem


def production_text(f: Path) -> str:
    text = f.read_text()
    cut = text.find("#[cfg(test)]\nmod tests")
    text = text if cut < 0 else text[:cut]
    # Comments name modules without importing them.
    text = re.sub(r"//[^\n]*", "", text)
    # Inside an inline module `super::` is this file, not the folder.
    while True:
        m = re.search(r"^\s*(?:pub(?:\([^)]*\))? )?mod \w+ \{", text, re.M)
        if not m:
            return text
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        text = text[: m.start()] + text[i + 1 :]


def imports(folder: Path, crate_path: str) -> dict:
    files = sorted(p for p in folder.glob("*.rs"))
    names = {module_name(folder, f) for f in files}
    graph = {}
    for f in files:
        me = module_name(folder, f)
        text = production_text(f)
        found = set()
        # `use super::{a, b::c}` and `super::a::...` anywhere in a path.
        for group in re.findall(r"super::\{([^}]*)\}", text):
            found.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        found.update(re.findall(r"super::(\w+)", text))
        found.update(re.findall(re.escape(crate_path) + r"::(\w+)", text))
        for group in re.findall(re.escape(crate_path) + r"::\{([^}]*)\}", text):
            found.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        if me == "mod":
            found.update(re.findall(r"\b(?:self::)?(\w+)::", text))
        graph[me] = sorted(n for n in found if n in names and n != me)
        if me != "mod":
            # What a child takes from the folder's mod.rs itself (`super::Name`).
            if re.search(r"super::(?:\{[^}]*\b[A-Z]\w*|[A-Z]\w*|[a-z_]+\s*\()", text):
                graph[me].append("mod")
    return graph


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(args[0])
    parts = folder.parts
    crate_path = "crate::" + "::".join(parts[parts.index("src") + 1 :])
    graph = imports(folder, crate_path)
    if "--cycles" not in sys.argv:
        for m in sorted(graph):
            print(f"{m} -> {', '.join(graph[m]) or '(nothing in {})'.format(folder)}")
    found = cycles(graph)
    for c in found:
        print("cycle: " + " <-> ".join(c))
    if not found:
        print(f"no import cycle among the modules of {folder}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
