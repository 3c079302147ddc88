"""The one home of process groups: without a launcher every collective is the identity and a
process group is not created; shard ranges cover every index once. (Two gloo processes:
tests/eval/test_distributed.py and tests/training/test_parallel.py.)"""

import torch

from sfd import distributed


def test_shards_cover_every_index_once():
    for n in (1, 2, 7, 11):
        ranges = [distributed.shard_range(n, r, 3) for r in range(3)]
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n))


def test_one_process_needs_no_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group("cpu") as device:
        assert device == torch.device("cpu") and not distributed.is_initialized()
        assert distributed.rank_and_world() == (0, 1) and distributed.is_main()
        x = torch.arange(6.0).view(3, 2)
        assert torch.equal(distributed.all_gather_rows(x), x)
        assert torch.equal(distributed.all_reduce_mean(x), x)
        assert distributed.broadcast_object({"a": 1}) == {"a": 1}
        distributed.barrier()
    assert not distributed.is_initialized()
