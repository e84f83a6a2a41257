"""Files gapkit writes get the permissions of any new file (the umask's): safetensors' own save_file
creates 0600 files, which would lock a shared run folder's checkpoints away from the group."""

import os
import stat

import pytest
import torch

from gapkit import Student, StudentSpec, save_pretrained
from gapkit.distill.checkpointing import save_training_state
from gapkit.io import save_safetensors


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes(folder) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def test_safetensors_file_follows_the_umask(tmp_path, umask):
    path = save_safetensors({"w": torch.zeros(2, 3)}, tmp_path / "t.safetensors")
    (tmp_path / "plain.txt").write_text("x")
    assert modes(tmp_path) == {"t.safetensors": 0o666 & ~umask, "plain.txt": 0o666 & ~umask}
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.zeros(2, 3))


def test_saved_model_and_training_checkpoint_files_all_have_the_same_mode(tmp_path, umask):
    spec = StudentSpec(layers=1, hidden=32, heads=4, vocab_size=64, max_positions=32, ffn_experts=2)
    student = Student(spec)
    folder = save_pretrained(student, tmp_path / "model")
    assert set(modes(folder).values()) == {0o666 & ~umask} and "model.safetensors" in modes(folder)

    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student(torch.randint(3, 64, (2, 8)), torch.ones(2, 8, dtype=torch.long)).last_hidden_state.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint = save_training_state(tmp_path / "checkpoint", student, optimizer, scheduler, {"step": 1},
                                     [{"torch": torch.get_rng_state()}])
    files = modes(checkpoint)
    assert {"model.safetensors", "optimizer.safetensors", "rng.safetensors"} <= set(files)
    assert set(files.values()) == {0o666 & ~umask}
