#!/usr/bin/env python3
"""Fails when the host's top-level modules import each other in a cycle.

Each folder (or single file) under host/src is one module; `crate::NAME` in code (comments
aside) is an import of NAME. Imports must run one way (see ARCHITECTURE.md, "Layers"), so any
strongly connected group of two or more modules is reported with one file and line per edge.

    python3 scripts/check-layers.py [host/src]
"""
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "host/src")
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
ENTRY = {"lib", "main"}  # the crate roots declare every module; they are not a layer


def module_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def edges():
    found = {}
    for path in sorted(ROOT.rglob("*.rs")):
        src = module_of(path)
        if src in ENTRY:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("//", 1)[0]
            for m in REF.finditer(code):
                dst = m.group(1)
                if dst != src and dst not in ENTRY:
                    found.setdefault((src, dst), f"{path}:{n}")
    return found


def cycles(graph):
    """Tarjan's strongly connected components with two or more modules."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    found = edges()
    graph = {}
    for src, dst in found:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    bad = cycles(graph)
    if not bad:
        print(f"check-layers: no import cycle between the modules of {ROOT}")
        return 0
    for group in bad:
        print(f"check-layers: import cycle between {', '.join(group)}:", file=sys.stderr)
        for (src, dst), at in sorted(found.items()):
            if src in group and dst in group:
                print(f"  {src} -> {dst}   first at {at}", file=sys.stderr)
    print("imports must run one way (ARCHITECTURE.md, \"Layers\"): move the shared piece down, "
          "or invert the dependency with a trait owned by the lower module", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
