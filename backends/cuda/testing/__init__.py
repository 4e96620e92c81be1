"""Fakes of the CUDA runtime and NVML for tests and plugin authors (not imported by the backend)."""
