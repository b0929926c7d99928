#!/usr/bin/env python3
"""No two source files of a crate may depend on each other, directly or
through others: a cycle means two modules that cannot be read (or moved)
one without the other.

A file depends on another when it names an item of that module
(`crate::a::b`, `super::x`, `self::x` paths, in `use` or inline). Three
kinds of reference are not counted: a module's use of its own
submodules (it declares them), a submodule's use of an enclosing module
(the items it shares with its siblings; `super::`), and any reference
from a `#[cfg(test)]` module.

usage: file-cycles.py [CRATE_SRC_DIR ...]   (default: every crate's src/)
Exits 1 and names each cycle if there is one, except the cycles that
.ci/file-cycles.allow lists (one per line, its files separated by spaces:
known debts, each with a comment saying why it is there; a cycle within
a listed one is allowed too, a new or grown one is not).
"""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            # src/bin/*.rs are crates of their own
            if parts and parts[0] == "bin":
                continue
            out[tuple(parts)] = os.path.join(dirpath, f)
    return out


def strip_tests(text):
    """The text without `#[cfg(test)]` items (a module or a function)."""
    lines = text.split("\n")
    out, skip, depth = [], False, 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if not skip and line.strip().startswith("#[cfg(test)]"):
            skip, depth, opened = True, 0, False
            i += 1
            continue
        if skip:
            depth += line.count("{") - line.count("}")
            if "{" in line:
                opened = True
            if (opened and depth <= 0) or (not opened and line.rstrip().endswith(";")):
                skip = False
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def references(text):
    """(anchor, [names]) for each path in the text."""
    refs = []
    for m in USE_GROUP.finditer(text):
        base = [p for p in m.group(2).split("::") if p]
        for item in re.split(r",", m.group(3)):
            item = item.strip().split(" as ")[0].strip()
            if not item or item.startswith("{"):
                continue
            first = item.split("::")
            refs.append((m.group(1), base + [p for p in first if p and p != "*" and not p.startswith("{")]))
    for m in PATH.finditer(text):
        refs.append((m.group(1), [p for p in m.group(2).split("::") if p]))
    return refs


def resolve(mods, here, anchor, names):
    if anchor == "crate":
        base = ()
    elif anchor == "self":
        base = here
    else:
        base = here[:-1]
        while names and names[0] == "super":
            base = base[:-1]
            names = names[1:]
    path = base + tuple(names)
    # the longest prefix that is a module file
    for n in range(len(path), -1, -1):
        if path[:n] in mods:
            return path[:n]
    return ()


def cycles(src):
    mods = modules(src)
    edges = {m: set() for m in mods}
    for here, f in mods.items():
        with open(f, encoding="utf-8") as fh:
            text = strip_comments(strip_tests(fh.read()))
        for anchor, names in references(text):
            to = resolve(mods, here, anchor, names)
            if to == here or to == ():
                continue
            # own submodule, or an enclosing module
            if to[: len(here)] == here or here[: len(to)] == to:
                continue
            edges[here].add(to)
    # Tarjan's strongly connected components
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index:
            visit(v)
    return [[mods[m] for m in sorted(c)] for c in sccs]


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = argv or sorted(
        os.path.join(dirpath, "src")
        for dirpath, dirs, files in os.walk(root)
        if "Cargo.toml" in files and os.path.isdir(os.path.join(dirpath, "src"))
        and "/target" not in dirpath and "/.git" not in dirpath
    )
    allowed = []
    allow_file = os.path.join(root, ".ci", "file-cycles.allow")
    if os.path.exists(allow_file):
        with open(allow_file, encoding="utf-8") as fh:
            for line in fh:
                line = line.split("#", 1)[0].split()
                if line:
                    allowed.append(set(line))
    bad = 0
    for src in srcs:
        for c in cycles(src):
            names = [os.path.relpath(f, root) for f in c]
            if any(set(names) <= a for a in allowed):
                print("known file cycle (.ci/file-cycles.allow): " + " <-> ".join(names))
                continue
            bad += 1
            print("file cycle: " + " <-> ".join(names))
    if bad:
        print(f"{bad} cycle(s) between source files; see .ci/file-cycles.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
