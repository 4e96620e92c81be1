"""The layout seam: a layout is one class; the estimate, speed, search and table ask it only."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from hal.errors import ConfigError
from hal.planner import preset
from hal.planner.estimate import Workload, estimate, memory
from hal.planner.layouts import (
    ExpertOffload,
    ExpertParallel,
    LayerSplit,
    Layout,
    Search,
    Shares,
    TensorPipeline,
    register,
    unregister,
)
from hal.planner.models import ModelSpec
from hal.planner.planning import plan
from hal.planner.speed import Efficiency, Rates, speed

GIB = 2**30


@dataclass(frozen=True)
class Mirrored(Layout):
    """A toy: every one of ``n`` devices holds a quarter of the weights and nothing else."""

    n: int = 2
    kind: ClassVar[str] = "toy-quarter"
    preference: ClassVar[int] = 0

    @property
    def count(self) -> int:
        return self.n

    @property
    def label(self) -> str:
        return f"toy {self.n}"

    def shares(self, spec: ModelSpec) -> Shares:
        return Shares(body=0.25, kept_params=spec.embedding_params + spec.lm_head_params,
                      kept_split=0.25, kv=0.25, transient=0.25, stored=0.25)

    @classmethod
    def candidates(cls, spec: ModelSpec, search: Search) -> Iterator[Layout]:
        yield cls(2)


@pytest.fixture
def toy() -> Iterator[type[Layout]]:
    register(Mirrored)
    yield Mirrored
    unregister(Mirrored.kind)


def test_a_toy_layout_in_one_class_is_ranked_by_hal_plan(toy: type[Layout]) -> None:
    from hal.cli import main

    p = plan("deepseek-r1-distill-llama-70b", "bf16", local=False, cards=["h100-sxm"],
             rank="memory")
    h100 = p.placement("h100-sxm")
    # 2 devices holding a quarter each fit where TP needs 4: the toy wins the count
    assert h100.layout == Mirrored(2) and h100.config == "2 x NVIDIA H100 SXM 80GB (toy 2)"
    assert p.ranking[0].layout == "toy 2"
    assert h100.per_device is not None
    assert h100.per_device.weights == pytest.approx(
        memory(Workload(p.spec, "bf16"), TensorPipeline()).weights * 0.25, rel=1e-6)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "deepseek-r1-distill-llama-70b", "--no-local", "--cards",
                     "h100-sxm", "--rank", "memory", "--layout", "toy-quarter"]) == 0
    assert "toy 2" in out.getvalue()


def test_tensor_pipeline_is_the_keyword_estimate() -> None:
    spec = preset("deepseek-r1-distill-llama-70b")
    for tp, pp in ((1, 1), (4, 1), (8, 2), (2, 5)):
        kw = estimate(spec, dtype="bf16", context=8192, tensor_parallel=tp, pipeline_parallel=pp)
        seam = memory(Workload(spec, "bf16", context=8192), TensorPipeline(tp, pp))
        assert kw == seam and (kw.tensor_parallel, kw.pipeline_parallel) == (tp, pp)


def test_layer_split_divides_memory_but_not_a_tokens_time() -> None:
    spec = preset("deepseek-r1-distill-llama-70b")  # 80 layers
    work = Workload(spec, "int4", context=4096)
    one, four = memory(work, TensorPipeline()), memory(work, LayerSplit(4))
    assert four.kv_cache == pytest.approx(one.kv_cache / 4, rel=1e-6)
    assert one.weights / 4 < four.weights < one.weights / 3  # a stage also holds the head
    rates = Rates(bandwidth=1e12)
    bare = Efficiency(bandwidth=1.0)
    s1, s4 = speed(work, TensorPipeline(), rates, bare), speed(work, LayerSplit(4), rates, bare)
    assert s4.decode_tokens_s == pytest.approx(s1.decode_tokens_s, rel=1e-9)  # in turn
    hop = Efficiency(bandwidth=1.0, hop_s=1e-3)
    assert 1 / speed(work, LayerSplit(4), rates, hop).decode_tokens_s == pytest.approx(
        1 / s1.decode_tokens_s + 3e-3, rel=1e-9)
    # tensor parallel 4 reads a quarter a device: faster than the same cards in turn
    assert speed(work, TensorPipeline(4), rates, bare).decode_tokens_s > 3 * s4.decode_tokens_s


def test_consumer_cards_split_layers_and_servers_use_tensor_parallel() -> None:
    p = plan("deepseek-r1-distill-llama-70b", "bf16", local=False,
             cards=["rtx-4090", "h100-sxm"])
    assert isinstance(p.placement("h100-sxm").layout, TensorPipeline)
    lay = p.placement("rtx-4090").layout
    assert lay is not None and lay.count >= 7
    # past one 8-card node a PCIe box splits layers rather than pipeline over nodes
    assert isinstance(lay, LayerSplit) or lay.count <= 8


def test_a_forced_tp_that_does_not_divide_the_heads_names_what_would() -> None:
    spec = preset("deepseek-r1-distill-qwen-14b")  # 40 heads, 8 KV heads
    with pytest.raises(ConfigError, match="expected one of: 1, 2, 4, 8"):
        memory(Workload(spec), TensorPipeline(5))
    with pytest.raises(ConfigError, match="layout 'nope' is unknown"):
        plan(spec, local=False, layout="nope")


@pytest.mark.parametrize(("args", "named"), [
    (["deepseek-r1-distill-qwen-14b", "--layout", "offload", "--host", "desktop-ddr5-6000"],
     "use --layout tp or layer-split"),
    (["deepseek-r1", "--layout", "offload"], "add --host, one of: desktop-ddr5-6000"),
    (["deepseek-r1-distill-qwen-14b", "--tensor-parallel", "5"], "expected one of: 1, 2, 4, 8"),
    (["deepseek-r1", "--host", "nowhere"], "expected one of: desktop-ddr5-6000"),
    (["deepseek-r1", "--layout", "ring"], "expected one of: tp, layer-split, offload, ep"),
    (["deepseek-r1-distill-qwen-14b", "--layout", "ep"], "use --layout tp or layer-split"),
    (["deepseek-r1", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    (["deepseek-r1", "--mtp", "2"], "--mtp"),
])
def test_impossible_layouts_are_one_line_exit_2_saying_what_would_work(
        args: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    from hal.cli import main

    assert main(["plan", *args, "--no-local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err


def test_expert_offload_keeps_the_routed_experts_on_the_host() -> None:
    r1 = preset("deepseek-r1")
    work = Workload(r1, "int4", context=1024)
    on_gpu, offload = memory(work, TensorPipeline()), memory(work, ExpertOffload())
    assert offload.total < on_gpu.total / 20 and on_gpu.host == 0
    assert offload.host == pytest.approx(r1.routed_params * 4.125 / 8, rel=1e-6)
    gpu = Rates(bandwidth=1e12)
    slow, fast = (Rates(bandwidth=1e12, host_bandwidth=b, host="h") for b in (1e11, 2e11))
    bare = Efficiency(bandwidth=1.0, host_bandwidth=1.0)
    t_slow = 1 / speed(work, ExpertOffload(), slow, bare).decode_tokens_s
    t_fast = 1 / speed(work, ExpertOffload(), fast, bare).decode_tokens_s
    host_bytes = t_slow - 1 / speed(work, ExpertOffload(), gpu, bare).decode_tokens_s
    assert host_bytes == pytest.approx(2 * (t_fast - 1 / speed(
        work, ExpertOffload(), gpu, bare).decode_tokens_s), rel=1e-6)  # time ~ 1 / host bandwidth
    p = plan("deepseek-r1", "int4", local=False, cards=["rtx-4090"], host="xeon-8ch-ddr5-4800")
    assert isinstance(p.placement("rtx-4090").layout, ExpertOffload)


def test_expert_parallel_splits_the_experts_and_the_batch_not_the_shared_part() -> None:
    r1 = preset("deepseek-r1")
    work = Workload(r1, "fp8", batch=16, context=4096)
    one, ep = memory(work, TensorPipeline()), memory(work, ExpertParallel(16))
    routed_bytes = r1.routed_params * work.format.bits_per_weight / 8
    shared = one.weights + one.weight_scales - routed_bytes
    assert ep.weights + ep.weight_scales == pytest.approx(shared + routed_bytes / 16, rel=0.01)
    assert ep.kv_cache == pytest.approx(one.kv_cache / 16, rel=1e-6)  # one sequence a device
    rates = Rates(bandwidth=1e12, link_bandwidth=1e11, link="test link")
    bare = Efficiency(bandwidth=1.0)
    tp_s = speed(work.but(batch=1), TensorPipeline(8), rates, bare)
    ep_s = speed(work.but(batch=1), ExpertParallel(8), rates, bare)
    # at batch 1 the attention device reads the whole shared part: EP is slower than TP 8
    assert ep_s.bytes_per_step > 4 * tp_s.bytes_per_step
    assert ep_s.decode_tokens_s < tp_s.decode_tokens_s and ep_s.comm_s_per_step > 0


def test_mtp_is_an_option_that_drafts_one_token_for_one_layer() -> None:
    r1 = preset("deepseek-r1")
    work = Workload(r1, "fp8", context=4096)
    rates, eff = Rates(bandwidth=3e12, link_bandwidth=4e11, link="l"), Efficiency()
    plain = speed(work, TensorPipeline(8), rates, eff).decode_tokens_s
    drafted = speed(work.but(mtp=0.85), TensorPipeline(8), rates, eff).decode_tokens_s
    assert drafted == pytest.approx(plain * 1.85 / (1 + 1 / r1.num_layers), rel=1e-9)
    assert plan("deepseek-r1", local=False, cards=["h100-sxm"]).request.mtp == 0.0  # off
