"""Property-based: mutated adapter configs and shard indexes only ever raise the error catalogue."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_checkpoint import write_sharded
from test_peft_adapter import write_adapter

from unisub_hub.errors import UnisubError
from unisub_hub.io.checkpoint import CheckpointSource
from unisub_hub.io.peft_adapter import LoraSource

CASES = 1000

pytestmark = pytest.mark.slow  # 1000-example batteries

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.integers(10**20, 10**30)
    | st.floats()
    | st.text(max_size=10)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
config_keys = st.sampled_from(
    [
        "r",
        "lora_alpha",
        "use_rslora",
        "fan_in_fan_out",
        "rank_pattern",
        "alpha_pattern",
        "peft_type",
        "use_dora",
        "target_modules",
    ]
)
pattern_keys = st.sampled_from(["q", "layers.0.q", "(q", "[", ".*", "layers\\.1\\.q", ""]) | st.text(max_size=6)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return write_adapter(tmp_path_factory.mktemp("fuzz-adapter") / "a")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return write_sharded(tmp_path_factory.mktemp("fuzz-shards") / "m")[0]


def _json_dump(value) -> str:
    return json.dumps(value, allow_nan=True)  # 1e999 and NaN reach the reader as Python's json would write them


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(config_keys, json_values | st.dictionaries(pattern_keys, scalars, max_size=3), max_size=4),
    raw=st.booleans(),
    junk=st.binary(max_size=40),
)
def test_mutated_adapter_configs_only_raise_catalogue_errors(adapter, changes, raw, junk):
    config = json.loads((adapter / "adapter_config.json").read_text())
    text = junk.decode("latin-1") if raw else _json_dump({**config, **changes})
    (adapter / "adapter_config.json").write_text(text)
    try:
        source = LoraSource(adapter)
        updates = source.load(list(source.modules))
        for update in updates.values():
            assert math.isfinite(update.scale) and update.scale != 0
    except UnisubError as error:
        assert str(adapter) in str(error), f"the error does not name the adapter: {error}"
        assert raw or changes, f"the unchanged config was refused: {error}"
    finally:
        (adapter / "adapter_config.json").write_text(json.dumps(config))


index_values = json_values | st.sampled_from(
    ["model-00001-of-00002.safetensors", "../x.safetensors", "/etc/passwd", "a/b.safetensors", "..", ""]
)


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    weight_map=st.dictionaries(
        st.sampled_from(["a.weight", "b.weight"]) | st.text(max_size=6), index_values, max_size=3
    )
    | json_values,
    wrap=st.booleans(),
    raw=st.booleans(),
    junk=st.binary(max_size=40),
)
def test_mutated_shard_indexes_only_raise_catalogue_errors(sharded, weight_map, wrap, raw, junk):
    index = sharded / "model.safetensors.index.json"
    original = index.read_text()
    pristine = CheckpointSource(sharded)
    truth = {name: pristine.load_rows(name, 0, 1) for name in pristine.tensors}
    index.write_bytes(
        junk if raw else _json_dump({"metadata": {}, "weight_map": weight_map} if wrap else weight_map).encode()
    )
    try:
        source = CheckpointSource(sharded)
        for name in source.tensors:  # an index can only point at the shard that holds a tensor, never elsewhere
            assert torch.equal(source.load_rows(name, 0, 1), truth[name]), name
    except UnisubError as error:
        assert str(sharded) in str(error), f"the error does not name the checkpoint: {error}"
    finally:
        index.write_text(original)
