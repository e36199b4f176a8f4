"""Fixtures and the hypothesis profile; plain helpers are in helpers.py."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "pyattn",
    deadline=None,
    derandomize=True,  # the same examples on every run (CI stability)
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # `isa` is constant for one test
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
settings.load_profile("pyattn")


def _usable_isas():
    """ISAs compiled in AND supported by this CPU (each one is tested)."""
    try:
        import pyattn

        cfg = pyattn.get_config()
    except Exception as exc:  # the `isa` fixture then fails loudly
        return [f"<pyattn unusable: {type(exc).__name__}: {exc}>"]
    usable = [i for i in cfg["isa_compiled"] if i in cfg["isa_supported"]]
    # A run with PYATTN_ISA forced (.ci/run repeats the suite once per ISA)
    # tests that ISA only: the unforced run already covered every other one.
    forced = os.environ.get("PYATTN_ISA")
    if forced and cfg["isa"] in usable:
        return [cfg["isa"]]
    return usable


@pytest.fixture(params=_usable_isas())
def isa(request):
    """Run the test with each usable ISA selected; restores the previous one."""
    import pyattn

    prev = pyattn._core.set_isa(request.param)
    try:
        yield request.param
    finally:
        pyattn._core.set_isa(prev)
