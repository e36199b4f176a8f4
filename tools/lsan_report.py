"""Reads a LeakSanitizer report (stdin or a file) and prints the leaks that
pyattn's core allocated: those whose allocation stack has a frame in
pyattn/_core*.so or csrc/. Exit status 1 if there is one.

Why a filter and not an LSan suppression file: a suppression matches when ANY
frame of the stack matches, and every allocation made in a Python program has
interpreter frames below it -- suppressing CPython would hide pyattn's leaks
too. CPython and NumPy leave their own objects allocated at exit (interned
strings, type objects, module state); those stacks have no pyattn frame.
One-time allocations of the module's import (pybind11's type and function
records, reachable from the module object until the interpreter exits)
are listed separately: they do not grow with calls.
"""

import re
import sys

HEADER = re.compile(r"^(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\) allocated from:")


def blocks(lines):
    cur = None
    for line in lines:
        m = HEADER.match(line.strip())
        if m:
            if cur:
                yield cur
            cur = {"kind": m.group(1), "bytes": int(m.group(2)), "objects": int(m.group(3)), "frames": []}
        elif cur is not None and line.strip().startswith("#"):
            cur["frames"].append(line.strip())
        elif cur is not None and not line.strip():
            yield cur
            cur = None
    if cur:
        yield cur


def ours(frame):
    return "_core.cpython" in frame or "/csrc/" in frame


def main():
    text = open(sys.argv[1]).read().splitlines() if len(sys.argv) > 1 else sys.stdin.read().splitlines()
    total = {"all": [0, 0], "import": [0, 0], "calls": [0, 0]}
    call_leaks = []
    for b in blocks(text):
        total["all"][0] += b["bytes"]
        total["all"][1] += b["objects"]
        if not any(ours(f) for f in b["frames"]):
            continue
        key = "import" if any("PyInit__core" in f for f in b["frames"]) else "calls"
        total[key][0] += b["bytes"]
        total[key][1] += b["objects"]
        if key == "calls":
            call_leaks.append(b)
    print(f"LeakSanitizer: {total['all'][0]} bytes in {total['all'][1]} objects left at exit in all; "
          f"through pyattn's core: {total['import'][0]} bytes in {total['import'][1]} objects at import "
          f"(module state), {total['calls'][0]} bytes in {total['calls'][1]} objects from calls")
    for b in call_leaks[:10]:
        print(f"\n{b['kind']} leak of {b['bytes']} bytes in {b['objects']} objects:")
        print("\n".join(b["frames"][:25]))
    return 1 if call_leaks else 0


if __name__ == "__main__":
    sys.exit(main())
