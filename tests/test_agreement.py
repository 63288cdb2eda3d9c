"""Out-of-memory back-off agreed by the ranks that share a base (`frost.agreement`), in one process with a stand-in
group; the 2-rank FSDP run that needs it is `tests/test_fsdp.py::test_ranks_of_a_group_agree_on_pass_sizes_...`."""

from __future__ import annotations

import pytest
import torch

import frost.agreement
from conftest import make_instance, make_tiny_llama, random_moves
from frost.agreement import ALONE, Agreement, fits
from frost.judge import Judge
from frost.judge_engine import JudgeOutOfMemory


class Group(Agreement):
    """A group whose other ranks proposed `others` and raised no flag."""

    shared = True

    def __init__(self, others: int = 10**9) -> None:
        self.others, self.asked = others, []

    def smallest(self, n: int) -> int:
        self.asked.append(n)
        return min(n, self.others)

    def any(self, flag: bool) -> bool:
        return flag


def test_a_process_alone_never_probes(monkeypatch):
    monkeypatch.setattr(frost.agreement, "_allocate", lambda *a: pytest.fail("allocated"))
    assert fits(ALONE, 10**15, torch.device("cpu"), "judge")


def test_a_group_halves_the_judge_pass_where_a_probe_fails_and_scores_the_same(monkeypatch):
    model = make_tiny_llama(seed=5)
    inst, moves = make_instance(move_length=4, seed=6), random_moves(8, 4, seed=7)
    want = Judge(model, batch_size=8).rewards(inst, moves)
    judge, group = Judge(model, batch_size=8), Group(others=6)
    judge.agreement = group
    probes: list[int] = []

    def allocate(nbytes, device, what):  # the first probe does not fit
        probes.append(nbytes)
        if len(probes) == 1:
            raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(frost.agreement, "_allocate", allocate)
    with pytest.warns(UserWarning, match="judge: out of memory at 6 sequences per pass; continuing with 3"):
        got = judge.rewards(inst, moves)
    assert torch.allclose(got, want, atol=2e-5)
    assert group.asked == [8] and judge.batch_size == 3  # the group's smallest size (6), then half of it
    assert probes[0] == 2 * probes[1]  # each probe is the pass's logits: 6 rows, then 3


def test_out_of_memory_inside_a_group_pass_stops_in_one_line(monkeypatch):
    model = make_tiny_llama(seed=5)
    judge = Judge(model, batch_size=8)
    judge.agreement = Group()
    monkeypatch.setattr(frost.agreement, "_allocate", lambda *a: None)

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(judge, "_logits", no_memory)
    with pytest.raises(JudgeOutOfMemory, match="one rank of an FSDP group"):
        judge.rewards(make_instance(move_length=4, seed=6), random_moves(4, 4, seed=7))
