"""CMU-3: the parallelization planner (ember/distributed/planner.py): a cost model chooses data,
tensor or pipeline parallelism per layer under a per-device memory cap."""
import pytest

pytest.importorskip("mpi4py")
import ember  # noqa: E402
import ember.distributed as dist  # noqa: E402
from ember import nn  # noqa: E402
from ember.recipes.fashion_mnist import FashionCNN  # noqa: E402

MiB = 1 << 20


def test_cmu3_flagship_cnn_is_data_parallel():
    plan = dist.plan_parallelism(FashionCNN(), ember.randn(128, 1, 28, 28), 2, 1024 * MiB)
    assert plan.kind == "data" and {lp.strategy for lp in plan.layers} == {"data"}
    assert [lp.name for lp in plan.layers][:2] == ["features.0", "features.1"]  # leaves, in call order
    assert plan.memory <= plan.cap


def test_cmu3_a_layer_over_the_cap_goes_tensor_parallel():
    m = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 4096), nn.ReLU(), nn.Linear(4096, 10))
    plan = dist.plan_parallelism(m, ember.randn(64, 256), 4, 64 * MiB)
    big = next(lp for lp in plan.layers if lp.name == "2")
    assert 16 * big.params > plan.cap  # its data-parallel state alone exceeds the cap
    assert plan.strategy("2") == "tensor" and plan.strategy("4") == "data" and plan.kind == "tensor"
    assert plan.memory <= plan.cap
    text = str(ember.inspect(plan))  # ember.inspect prints the plan
    assert "parallel plan: 4 devices" in text and "tensor" in text and "per device:" in text


def test_cmu3_memory_pressure_moves_layers_then_pipelines():
    m = nn.Sequential(*[k for _ in range(8) for k in (nn.Linear(1024, 1024), nn.ReLU())])
    x = ember.randn(1024, 1024)  # data parallelism is the fastest here, and needs 144 MiB
    roomy = dist.plan_parallelism(m, x, 4, 4096 * MiB)
    assert roomy.kind == "data" and roomy.memory > 140 * MiB
    tight = dist.plan_parallelism(m, x, 4, 120 * MiB)
    assert tight.kind == "tensor" and 0 < sum(lp.strategy == "tensor" for lp in tight.layers) < 8
    assert tight.memory <= 120 * MiB and "moved to tensor parallelism" in tight.why
    piped = dist.plan_parallelism(m, x, 4, 80 * MiB)  # all-tensor would need 104 MiB
    stages = [int(lp.strategy.split(":")[1]) for lp in piped.layers]
    assert piped.kind == "pipeline" and stages == sorted(stages) and set(stages) == {0, 1, 2, 3}
    assert piped.memory <= 80 * MiB
    with pytest.raises(dist.DistributedError, match="no strategy fits 40.0 MiB per device.*pipeline 48.0 MiB"):
        dist.plan_parallelism(m, x, 4, 40 * MiB)
