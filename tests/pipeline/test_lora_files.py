"""kohya/A1111 and diffusers LoRA files (no adapter_config.json) as LoRA sources, written back in their layout.

Members share a planted subspace, have ranks 2 and 4 and (kohya) an alpha per module, so a
held-out member lies in the basis: its projection and the file materialized from it must
give back its update exactly, under the key names the source used.
"""

from __future__ import annotations

import json

import pytest
import torch
from clitools import run
from safetensors import safe_open
from safetensors.torch import save_file

# module -> weight shape (out, in[, kh, kw]); kohya spells modules with underscores
MODULES = {"down_blocks_0_attn_to_q": (16, 12), "down_blocks_0_attn_to_k": (16, 12), "conv_in": (8, 4, 3, 3)}
KOHYA = {f"lora_unet_{name}": shape for name, shape in MODULES.items()} | {
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (12, 12)
}
DIFFUSERS = {f"unet.{name.replace('_', '.')}": shape for name, shape in MODULES.items()} | {
    "text_encoder.text_model.encoder.layers.0.q_proj": (12, 12)
}


def planted_updates(stems: dict[str, tuple[int, ...]], count: int, seed: int = 0):
    """Per member and module: (down, up, alpha) whose scaled product lies in a shared rank-3 subspace."""
    gen = torch.Generator().manual_seed(seed)
    shared = {
        stem: (
            torch.linalg.qr(torch.randn(shape[0], 3, generator=gen))[0],
            torch.linalg.qr(torch.randn(int(torch.tensor(shape[1:]).prod()), 3, generator=gen))[0],
        )
        for stem, shape in stems.items()
    }
    members = []
    for m in range(count):
        rank = (2, 4)[m % 2]
        factors = {}
        for stem, shape in stems.items():
            left, right = shared[stem]
            up = left @ torch.randn(3, rank, generator=gen)
            down = torch.randn(rank, 3, generator=gen) @ right.T
            if len(shape) > 2:
                up, down = up.reshape(shape[0], rank, 1, 1), down.reshape(rank, *shape[1:])
            factors[stem] = (down, up, float(rank * (1 + m % 3)))
        members.append(factors)
    return members


def update_of(down, up, alpha, rank):
    return (up.flatten(1) @ down.flatten(1)) * (alpha / rank)


def write_kohya(path, factors):
    tensors = {}
    for stem, (down, up, alpha) in factors.items():
        tensors[f"{stem}.lora_down.weight"] = down.to(torch.float16)
        tensors[f"{stem}.lora_up.weight"] = up.to(torch.float16)
        tensors[f"{stem}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    save_file(tensors, path, metadata={"ss_network_dim": "4"})
    return path


def write_diffusers(folder, factors):
    folder.mkdir(parents=True)
    tensors = {}
    for stem, (down, up, _alpha) in factors.items():
        tensors[f"{stem}.lora_A.weight"] = down
        tensors[f"{stem}.lora_B.weight"] = up
    save_file(tensors, folder / "pytorch_lora_weights.safetensors")
    (folder / "README.md").write_text("a diffusers LoRA")
    return folder


def file_updates(path, layout):
    """Each module's scaled update as stored in a LoRA file of ``layout``."""
    with safe_open(path, "pt") as handle:
        keys = set(handle.keys())
        names = ("lora_down", "lora_up") if layout == "kohya" else ("lora_A", "lora_B")
        stems = {key.rsplit(f".{names[0]}.weight", 1)[0] for key in keys if key.endswith(f".{names[0]}.weight")}
        out = {}
        for stem in stems:
            down, up = (
                handle.get_tensor(f"{stem}.{names[0]}.weight").float(),
                handle.get_tensor(f"{stem}.{names[1]}.weight").float(),
            )
            alpha = float(handle.get_tensor(f"{stem}.alpha")) if f"{stem}.alpha" in keys else down.shape[0]
            out[stem] = update_of(down, up, alpha, down.shape[0])
    return keys, out


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_a_lora_file_collection_builds_projects_and_materializes_in_its_layout(tmp_path, layout):
    stems = KOHYA if layout == "kohya" else DIFFUSERS
    members = planted_updates(stems, 9)
    if layout == "kohya":
        paths = [write_kohya(tmp_path / f"style-{m}.safetensors", factors) for m, factors in enumerate(members)]
    else:
        paths = [write_diffusers(tmp_path / f"lora-{m}", factors) for m, factors in enumerate(members)]
    built = json.loads(run("build", *paths[:8], "--out", tmp_path / "basis", "--k", "3", "--json").stdout)
    assert built["report"]["layers"] and len(built["report"]["layers"]) == len(
        stems
    )  # every module, ranks 2 and 4 alike
    projected = json.loads(
        run("project", paths[8], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--json").stdout
    )
    assert max(e["rel_error"] for e in projected["errors"].values()) < 1e-3  # fp16 factors: the planted span holds it
    manifest = json.loads((tmp_path / "task" / "unisub_coefficients.json").read_text())
    assert manifest["passthrough"] == [] and manifest["lora"]["layout"] == layout  # alphas are read, not carried
    assert {e["name"] for e in manifest["layers"]} == {f"{stem}.weight" for stem in stems}
    made = json.loads(run("materialize", "task", "--out", tmp_path / "out", "--json").stdout)
    source_file = paths[8] if layout == "kohya" else paths[8] / "pytorch_lora_weights.safetensors"
    assert made["format"] == "lora" and made["files"] == [source_file.name]
    source_keys, expected = file_updates(source_file, layout)
    written_keys, found = file_updates(tmp_path / "out" / source_file.name, layout)
    assert (
        written_keys == source_keys
    )  # the same names: kohya, A1111, ComfyUI and diffusers load it as they loaded the source
    for stem, update in expected.items():
        assert torch.linalg.norm(found[stem] - update) <= 2e-3 * torch.linalg.norm(update), stem
    refused = run("materialize", "task", "--out", tmp_path / "peft", "--format", "peft", ok=False)
    assert refused.exit_code == 1 and f"this set came from a {layout} LoRA file" in refused.output
    merged = run("materialize", "task", "--out", tmp_path / "merged", "--format", "hf", ok=False)
    expected = (
        "--format hf of a LoRA set is the base model with the update merged in, so it needs --base"
        if layout == "diffusers"
        else "kohya's underscored names"
    )
    assert merged.exit_code == 1 and expected in merged.output


def test_kohya_files_of_mixed_ranks_are_read_as_updates_not_as_dense_tensors(tmp_path):
    from unisub_hub.io.collection import open_source

    members = planted_updates(KOHYA, 2)
    source = open_source(str(write_kohya(tmp_path / "a.safetensors", members[1])))
    assert source.kind == "lora" and source.layout.name == "kohya" and source.passthrough_names == []
    stem = "lora_unet_conv_in"
    down, up, alpha = members[1][stem]
    module = source.modules[f"{stem}.weight"]
    assert (
        module.tensor_shape == (8, 4, 3, 3)
        and module.rank == 4
        and source.scales[f"{stem}.weight"] == pytest.approx(alpha / 4)
    )
    got = source.load([f"{stem}.weight"])[f"{stem}.weight"]
    dense = (got.lora_b.double() @ got.lora_a.double()) * got.scale
    assert torch.allclose(dense, update_of(down.half().double(), up.half().double(), alpha, 4), atol=1e-9)


def test_a_kohya_alpha_of_zero_means_alpha_equals_rank_as_kohya_reads_it(tmp_path):
    from unisub_hub.io.collection import open_source

    members = planted_updates(KOHYA, 1)
    zeroed = {stem: (down, up, 0.0) for stem, (down, up, _alpha) in members[0].items()}
    source = open_source(str(write_kohya(tmp_path / "zero.safetensors", zeroed)))
    assert all(scale == 1.0 for scale in source.scales.values())  # kohya-ss: alpha 0 -> alpha = rank


def test_a_kohya_alpha_that_is_not_one_number_is_one_line(tmp_path):
    members = planted_updates(KOHYA, 1)
    path = write_kohya(tmp_path / "bad.safetensors", members[0])
    from safetensors.torch import load_file

    tensors = load_file(path)
    tensors["lora_unet_conv_in.alpha"] = torch.ones(2)
    save_file(tensors, path)
    other = write_kohya(tmp_path / "ok.safetensors", planted_updates(KOHYA, 2)[1])
    result = run("build", path, other, "--out", tmp_path / "basis", ok=False)
    assert (
        result.exit_code == 1
        and "lora_unet_conv_in.alpha: an alpha must be one number" in result.output.strip().splitlines()[-1]
    )


def test_a_lycoris_tucker_core_is_refused_naming_the_module_not_read_as_up_times_down(tmp_path):
    """``lora_mid`` makes the update up x mid x down: reading up x down alone was a wrong answer."""
    from safetensors.torch import load_file

    path = write_kohya(tmp_path / "locon.safetensors", planted_updates(KOHYA, 1)[0])
    tensors = load_file(path)
    stem = next(key.removesuffix(".lora_down.weight") for key in sorted(tensors) if key.endswith(".lora_down.weight"))
    rank = tensors[f"{stem}.lora_down.weight"].shape[0]
    tensors[f"{stem}.lora_mid.weight"] = torch.randn(rank, rank, 3, 3).half()
    save_file(tensors, path)
    other = write_kohya(tmp_path / "ok.safetensors", planted_updates(KOHYA, 2)[1])
    result = run("build", path, other, "--out", tmp_path / "basis", ok=False)
    line = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and f"module {stem} has a lora_mid core" in line and "Traceback" not in result.output
    assert not (tmp_path / "basis").exists()


def test_an_adapter_without_a_module_the_basis_decomposes_is_refused_naming_the_module(tmp_path):
    members = planted_updates(KOHYA, 3)
    paths = [write_kohya(tmp_path / f"s{m}.safetensors", factors) for m, factors in enumerate(members[:2])]
    run("build", *paths, "--out", tmp_path / "basis", "--k", "2", "--no-register")
    fewer = write_kohya(
        tmp_path / "fewer.safetensors", {stem: f for stem, f in members[2].items() if stem != "lora_unet_conv_in"}
    )
    result = run("project", fewer, "--basis", tmp_path / "basis", "--out", tmp_path / "task", ok=False)
    assert result.exit_code == 1 and not (tmp_path / "task").exists()
    assert (
        "fewer.safetensors: has no LoRA update for lora_unet_conv_in.weight, which the basis decomposes: "
        "the adapter targets other modules than the adapters the basis was built from"
    ) in result.output


def test_a_basis_larger_than_its_sources_says_so(tmp_path):
    paths = [
        write_kohya(tmp_path / f"s{m}.safetensors", factors) for m, factors in enumerate(planted_updates(KOHYA, 4))
    ]
    flat = run("build", *paths, "--out", tmp_path / "flat", "--modes", "1", "--k", "3", "--no-register")
    assert "Warning: the basis (" in flat.output and "is larger than its 4 training sources together" in flat.output
    tucker = run("build", *paths, "--out", tmp_path / "tucker", "--k", "2", "--no-register")
    assert "Warning" not in tucker.output
