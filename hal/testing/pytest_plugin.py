"""pytest plugin for backend authors: fixtures that run hal's conformance suite on your backend.

Enable it in your plugin's repository and point it at your backend::

    # conftest.py
    pytest_plugins = ["hal.testing.pytest_plugin"]

    @pytest.fixture
    def hal_backend_under_test():
        return MyBackend(module=my_fake_module)      # or the real one on real hardware

    @pytest.fixture
    def hal_oom_error():
        return RuntimeError("MyAccel out of memory. Tried to allocate 2.00 GiB")

    # test_conformance.py
    from hal.testing.conformance import TestHalConformance  # noqa: F401  (collected by pytest)

Every fixture here is function-scoped and restores what it changed, so nothing leaks between
tests: the isolated plugin host is swapped in for the process's and hal's decision is reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hal.contract import Backend
from hal.plugins import PluginHost


@pytest.fixture
def hal_backend_under_test() -> Backend:
    """The backend the conformance suite checks; override it in your conftest.py."""
    pytest.skip("override the hal_backend_under_test fixture to return your backend instance")


@pytest.fixture
def hal_oom_error() -> BaseException | None:
    """An exception your allocator raises when it runs out of memory; override it."""
    return None


@pytest.fixture
def hal_oom_corpus_vendor() -> str | None:
    """Vendor key of hal's corpus of real OOM messages (``hal.testing.oom_corpus``), if any."""
    return None


@pytest.fixture
def hal_runtime_initialized() -> Callable[[], bool] | None:
    """A callable saying whether your device runtime is initialised (probe must not do it)."""
    return None


@pytest.fixture
def hal_plugin_host() -> Iterator[PluginHost]:
    """A fresh, empty plugin host installed as the process's: hal sees only what you register.

    ``hal.select()``, ``hal.get_device()`` and ``hal devices`` code in the same process use it;
    the previous host and decision come back afterwards.
    """
    from hal import plugins, selection

    host = PluginHost()
    selection.reset()
    saved = plugins.install_host(host)
    try:
        yield host
    finally:
        plugins.install_host(saved)
        selection.reset()


@pytest.fixture
def hal_registered(hal_plugin_host: PluginHost) -> Callable[..., Any]:
    """Register backends in the isolated host: ``hal_registered(MyBackend(), cpu=True)``.

    With ``cpu=True`` (the default) hal's CPU backend is registered too, as in a real process.
    """

    def register(*backends: Backend, cpu: bool = True) -> PluginHost:
        from hal.hookspecs import hookimpl

        class _Plugin:
            @hookimpl
            def hal_backends(self) -> list[Backend]:
                return list(backends)

        if cpu and hal_plugin_host.pm.get_plugin("cpu") is None:
            import importlib

            hal_plugin_host.register(importlib.import_module("hal.backends.cpu"), "cpu")
        name = "+".join(b.name for b in backends) or "empty"
        if not hal_plugin_host.register(_Plugin(), name):
            raise AssertionError(hal_plugin_host.records[name].error)
        return hal_plugin_host

    return register
