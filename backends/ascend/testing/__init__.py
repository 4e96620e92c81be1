"""Fakes of torch_npu for tests and plugin authors, and a contract check against the real wheel.

``fake_npu``: a fake ``torch.npu`` of real Ascend SoCs and loaders for torch_npu's import
failures; ``contract_npu``: torch_npu's public names read from its wheel, without CANN.
"""
