#!/usr/bin/env python3
"""Lists which sibling modules each module of one Rust module folder imports, and the import
cycles among them.

    python3 scripts/module-imports.py src/datastorage          # edges and cycles
    python3 scripts/module-imports.py src/datastorage --cycles # cycles only
    python3 scripts/module-imports.py src/evidence --imports-nothing-from datastorage,auditor

Reads the source as text: `super::x`, `crate::<folder path>::x` and, in the folder's mod.rs,
`self::x` / bare `x::` paths of declared modules. Unit tests (from the first `#[cfg(test)]`) are
left out: they may reach anywhere. Exits 1 when there is a cycle, so it can be a check.

`--imports-nothing-from a,b` asks instead whether any file under the folder (its subfolders and
unit tests included) names one of the crate's top-level modules `a`, `b`: as `crate::a`, inside
`crate::{...}`, or through enough `super::` to climb to the crate root. It prints each place
and exits 1 when there is one.
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


def top_level_names(group: str) -> list:
    """The first name of each comma-separated item of a `{...}` use group, nested groups skipped."""
    names, depth, item = [], 0, ""
    for ch in group + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            m = re.match(r"\s*(\w+)", item)
            if m:
                names.append(m.group(1))
            item = ""
        elif depth == 0 or ch == "{":
            item += ch
    return names


def matching_brace(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return len(text)


def crate_modules_named(f: Path, src: Path) -> list:
    """(line, top-level crate module) for every path in `f` that reaches the crate root."""
    rel = f.relative_to(src).with_suffix("").parts
    # The file's own module path: `a/mod.rs` is `a`, `a/b.rs` is `a::b`; lib.rs/main.rs the root.
    module = list(rel[:-1]) if rel[-1] in ("mod", "lib", "main") else list(rel)
    # Comments name modules without importing them; blanking them keeps the line numbers.
    text = re.sub(r"//[^\n]*", "", f.read_text())
    line = lambda at: text.count("\n", 0, at) + 1
    found = []
    for m in re.finditer(r"\bcrate::(\w+)", text):
        found.append((line(m.start()), m.group(1)))
    for m in re.finditer(r"\bcrate::\{", text):
        end = matching_brace(text, m.end() - 1)
        found += [(line(m.start()), n) for n in top_level_names(text[m.end() : end])]
    for m in re.finditer(r"\b((?:super::)+)(\w+|\{)", text):
        if m.group(1).count("super::") != len(module):
            continue
        if m.group(2) == "{":
            end = matching_brace(text, m.end() - 1)
            found += [(line(m.start()), n) for n in top_level_names(text[m.end() : end])]
        else:
            found.append((line(m.start()), m.group(2)))
    return sorted(set(found))


def imports_nothing_from(folder: Path, forbidden: set) -> int:
    src = Path(*folder.parts[: folder.parts.index("src") + 1])
    bad = 0
    for f in sorted(folder.rglob("*.rs")):
        for n, name in crate_modules_named(f, src):
            if name in forbidden:
                print(f"{f}:{n}: imports crate::{name}")
                bad += 1
    if bad:
        return 1
    print(f"nothing under {folder} imports crate::{{{', '.join(sorted(forbidden))}}}")
    return 0


def main() -> int:
    forbid = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--imports-nothing-from=")]
    argv = sys.argv[1:]
    if "--imports-nothing-from" in argv:
        i = argv.index("--imports-nothing-from")
        if i + 1 >= len(argv):
            print(__doc__, file=sys.stderr)
            return 2
        forbid.append(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(args[0])
    if forbid:
        return imports_nothing_from(folder, {n for names in forbid for n in names.split(",") if n})
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
