"""SFT batching: `length_buckets` cuts padding while tasks of similar length still share batches."""

from __future__ import annotations

import torch

from mllmtune.stages.sft import BucketSampler, length_buckets


def test_buckets_cover_every_index_and_keep_the_longest_within_twice_the_shortest():
    lengths = [5, 40, 9, 10, 80, 11, 21, 7, 300, 150]
    buckets = length_buckets(lengths)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) <= 2 * min(lengths[i] for i in b) for b in buckets)
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[5, 7, 9, 10], [11, 21], [40, 80], [150, 300]]


def test_batches_are_drawn_in_a_bucket_mix_tasks_of_similar_length_and_repeat_for_a_seed():
    # two short tasks (lengths 50 and 60) and a long one (180), shuffled together as in the world's pretraining mix
    tasks = ["a"] * 45 + ["b"] * 45 + ["long"] * 10
    lengths = [{"a": 50, "b": 60, "long": 180}[t] for t in tasks]
    sampler = BucketSampler(lengths, batch_size=8)
    for seed in range(6):
        torch.manual_seed(seed)
        order = list(sampler)
        assert sorted(order) == list(range(100)) and len(sampler) == 100
        # the 10 long rows: one drawn batch of 8 in a row, the other 2 in the remainders' batch of 4
        runs = "".join("L" if tasks[i] == "long" else "." for i in order).split(".")
        assert max(len(r) for r in runs) >= 8
        # the loader cuts every 8 indices; short rows of both tasks share cuts. The remainders' short batch lands
        # anywhere, so the cuts after it straddle two drawn batches (kept: world v4's base learned in this order)
        kinds = [{tasks[i] for i in order[j : j + 8]} for j in range(0, 100, 8)]
        assert sum(k == {"a", "b"} for k in kinds) >= 9
    torch.manual_seed(0)
    order = list(sampler)
    kinds = [{tasks[i] for i in order[j : j + 8]} for j in range(0, 100, 8)]
    # for seed 0 the remainders' batch comes late enough that the cuts keep lengths apart (seed 4's do not)
    assert sum(k == {"long"} for k in kinds) == 1  # 10 long rows: one full batch of them, 2 left over
    assert sum("long" in k and len(k) > 1 for k in kinds) <= 1  # only the remainders' batch mixes lengths here
    torch.manual_seed(0)
    assert list(sampler) == order
    torch.manual_seed(1)
    assert list(sampler) != order


def test_sft_trains_with_length_buckets(micro_world, tmp_path, monkeypatch):
    from mllmtune.models.bundle import load_bundle
    from mllmtune.stages import sft
    from mllmtune.stages.sft import SFTStage
    from mllmtune.world.build import pretrain_examples

    drawn = []
    original = sft.BucketSampler.__iter__

    def recorded(self):
        drawn.extend(original(self))
        return iter(drawn)

    monkeypatch.setattr(sft.BucketSampler, "__iter__", recorded)
    bundle = load_bundle("world")
    rows = pretrain_examples()[:24]
    stage = SFTStage(max_steps=3, batch_size=8, batching="length_buckets", logging_steps=1)
    summary = sft.run_sft(bundle.model, bundle.processor, rows, stage, tmp_path, 0)
    assert summary["steps"] == 3 and sorted(drawn) == list(range(24))
