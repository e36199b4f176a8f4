"""The shipped extension must run on any x86-64 CPU: wide-vector (VEX/EVEX)
instructions may appear only in the per-ISA kernel namespaces, which are
reached solely through run-time dispatch (no -march=native, no global -mavx2)."""

import platform
import re
import shutil
import subprocess

import pytest

import pyattn._core as core

ISA_NAMESPACES = ("pyattn::avx2::", "pyattn::avx512::")

pytestmark = [
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                       reason="the check reads x86-64 machine code"),
    pytest.mark.skipif(shutil.which("objdump") is None,
                       reason="objdump (binutils) is needed to disassemble the extension"),
]

_FUNC = re.compile(r"^[0-9a-f]+ <(.*)>:$")
# VEX/EVEX-encoded instructions start with 'v' (vmovaps, vfmadd231ps, ...) or
# use ymm/zmm registers; baseline x86-64 code uses neither.
_WIDE = re.compile(r"\t(v[a-z0-9]+)\b|%[yz]mm\d")


def functions_with_wide_instructions():
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", core.__file__],
                         capture_output=True, text=True, check=True).stdout
    found, current = set(), None
    for line in asm.splitlines():
        m = _FUNC.match(line)
        if m:
            current = m.group(1)
        elif current and _WIDE.search(line):
            found.add(current)
    return found


def test_wide_instructions_only_in_isa_targets():
    wide = functions_with_wide_instructions()
    outside = sorted(f for f in wide if not any(n in f for n in ISA_NAMESPACES))
    assert not outside, f"AVX instructions outside the ISA targets: {outside[:10]}"
    # The check can fail: the AVX2 kernels themselves must show up.
    assert any("pyattn::avx2::" in f for f in wide)
