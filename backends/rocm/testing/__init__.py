"""Fakes of the ROCm stack beside torch.cuda (whose HIP flavour is in ``hal.backends.cuda.testing``).

``fake_kfd``: the KFD topology the amdgpu driver writes, with each GPU's render node.
"""

from __future__ import annotations

from hal.backends.rocm.testing.fake_kfd import kfd_files, render_nodes

__all__ = ["kfd_files", "render_nodes"]
