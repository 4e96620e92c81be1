"""hal's built-in backends, one package a vendor, each a plugin written as an outside vendor would.

A backend plugin is a module with one ``@hal.hookimpl def hal_backends()`` returning
``hal.Backend`` instances, registered under the ``hal`` entry-point group in its
distribution's metadata.  Import torch and vendor SDKs inside methods, never at module level,
so that ``import hal`` and ``hal --help`` stay fast.  See docs/plugins.md.
"""
