"""Sorts a valgrind memcheck log into pyattn's findings and the
interpreter's / loader's own reports.

    python tools/valgrind_report.py valgrind.log

A report is pyattn's when a frame of its stack -- or, for uninitialised
values, of the stack that created the value (--track-origins=yes) -- is in
pyattn's core (pyattn/_core*.so). Why not a suppression file: a suppression
matches on the frames of the error's own stack, and an uninitialised value
that pyattn left in an output would be reported where CPython or NumPy read
it, under interpreter frames only; the origin stack is what tells them apart.
Leaks count when definitely lost through a pyattn frame. Exit status 1 if
pyattn has any.
"""

import collections
import re
import sys

OURS = re.compile(r"pyattn/_core[^ )]*\.so|/csrc/")


def blocks(lines):
    cur = []
    for line in lines:
        m = re.match(r"^==\d+== ?(.*)$", line)
        if not m:
            continue
        text = m.group(1)
        if not text.strip():
            if cur:
                yield cur
            cur = []
        else:
            cur.append(text)
    if cur:
        yield cur


def is_ours(block):
    return any(OURS.search(line) for line in block[1:])


def main():
    lines = open(sys.argv[1], errors="replace").read().splitlines()
    kinds = collections.Counter()
    ours, noise = [], collections.Counter()
    definite = [0, 0]
    for b in blocks(lines):
        head = b[0]
        leak = re.match(r"([\d,]+) bytes in ([\d,]+) blocks are definitely lost", head)
        error = re.match(r"(Invalid|Use of uninitialised|Conditional jump|Syscall param|Mismatched|"
                         r"Source and destination|Argument|Invalid free)", head)
        if not (leak or error):
            continue
        top = next((x.split(":", 1)[1].strip() for x in b[1:] if x.strip().startswith("at ")), "?")
        if leak:
            definite[0] += int(leak.group(1).replace(",", ""))
            definite[1] += 1
        if is_ours(b):
            ours.append(b)
        else:
            noise[(head.split(" in loss record")[0] if leak else head, re.sub(r"0x[0-9A-F]+: ", "", top))] += 1
        kinds["leak" if leak else "error"] += 1
    summary = re.findall(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts", "\n".join(lines))
    print(f"valgrind memcheck: {summary[-1][0] if summary else '?'} errors from "
          f"{summary[-1][1] if summary else '?'} contexts in all (definite leaks: {definite[0]} bytes in "
          f"{definite[1]} records); with a pyattn frame in the stack or the origin stack: {len(ours)}")
    print("reports without a pyattn frame (the interpreter's and the loader's own), by top frame:")
    for (head, top), n in noise.most_common():
        print(f"  {n:3d} x {head[:60]} at {top[:70]}")
    for b in ours[:10]:
        print("\npyattn: " + "\n  ".join(b[:30]))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
