"""Fakes of torch.xpu for tests and plugin authors (``fake_xpu``: real Intel GPUs as torch reports them)."""
