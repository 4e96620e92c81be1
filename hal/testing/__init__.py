"""Test helpers shipped for hal and for plugin authors: fake vendor device modules, contract
checks against the real modules, and a conformance suite. Vendor names are allowed here only.

Submodules are imported explicitly (``from hal.testing import fake_cuda``); nothing is
imported eagerly so that ``import hal.testing`` stays cheap.
"""
