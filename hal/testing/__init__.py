"""The vendor-neutral test kit for hal and for plugin authors: the conformance suite and its
pytest plugin, contract checks of fakes against real modules, a fake allocator module, fake
sysfs trees and a corpus of real out-of-memory errors.

Vendor fakes live beside their vendor (``hal.backends.cuda.testing``, ``hal.backends.rocm.
testing``, ``hal.backends.ascend.testing``, ``hal.backends.xpu.testing``).  Submodules are
imported explicitly (``from hal.testing import conformance``); nothing is imported eagerly, so
``import hal.testing`` stays cheap.
"""
