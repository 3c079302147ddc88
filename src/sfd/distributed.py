"""The one home of process groups. One process runs with no launcher; ``torchrun`` adds ranks.

Entry points open :func:`process_group` (or call :func:`init_from_env` and :func:`shutdown`;
process-level state belongs to entry points); library code only asks for the rank and world size,
which are 0 and 1 when
``torch.distributed`` is not initialised, and uses the collectives below, each the identity in
one process.

A lost rank (its process died, its host went away) is named, not waited for: collectives time
out after :func:`collective_timeout` seconds (``SFD_COLLECTIVE_TIMEOUT``, default 1800, torch's
own default for gloo; NCCL's is 600), every rank beats a heartbeat in the rendezvous store, and
:func:`process_group` turns a failed collective into one :class:`~sfd.errors.LostRankError`
naming the ranks whose heartbeat stopped. A SIGTERM (torchrun sends it to every rank when one
fails) becomes the same error, so a rank never dies without a line.

Work split by index: rank r of W takes the contiguous range ``shard_range(n, r, W)``, so
gathering the per-rank rows in rank order (:func:`all_gather_rows`) restores the global order
(which the Inception Score's sequential splits depend on).
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch
import torch.distributed as dist

from sfd.errors import LostRankError

HEARTBEAT_S = 1.0  # how often each rank beats; a rank is lost after 3 beats without one
_heartbeat: dict = {}
_SIGTERMED: list[int] = []  # stopping (a SIGTERM became the error, or one is on its way): later
# SIGTERMs are ignored until the process has printed its line and exited


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def rank_and_world() -> tuple[int, int]:
    return rank(), world_size()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def init_from_env(device: str | None = None) -> torch.device:
    """Initialise the default process group when launched by torchrun; return this rank's device.

    NCCL on CUDA, gloo on CPU. Under torchrun each rank takes GPU ``LOCAL_RANK``; without its
    variables nothing is initialised and ``device`` (e.g. ``cuda:1``) is used as given.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = torch.device(device)
    want_cuda = result.type == "cuda"
    if want_cuda:
        local = os.environ.get("LOCAL_RANK")
        result = torch.device("cuda", int(local) if local is not None else result.index or 0)
        torch.cuda.set_device(result)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_initialized():
        timeout = datetime.timedelta(seconds=collective_timeout())
        store, rank_, world = _attempt_store(timeout)
        group = dict(store=store, rank=rank_, world_size=world, timeout=timeout)
        if want_cuda:  # bound to this rank's GPU: barriers and collectives know their device
            dist.init_process_group("nccl", device_id=result, **group)
        else:
            dist.init_process_group("gloo", **group)
        _start_heartbeat()
    return result


def _attempt_store(timeout: datetime.timedelta) -> tuple:
    """(store, rank, world size) of the ``env://`` rendezvous, the store's keys under this
    torchrun attempt's prefix: torchrun's agent keeps one store across ``--max-restarts``
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE`` unset), and a restarted rank could read the
    addresses a dead one left there and fail to connect (pytorch/pytorch#135712)."""
    store, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is not None:
        store = dist.PrefixStore(f"sfd/attempt_{attempt}", store)
    return store, rank_, world


def collective_timeout() -> float:
    """Seconds a collective may wait for the other ranks (``SFD_COLLECTIVE_TIMEOUT``)."""
    raw = os.environ.get("SFD_COLLECTIVE_TIMEOUT", "1800")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"SFD_COLLECTIVE_TIMEOUT must be a number of seconds > 0; got {raw!r}")
    return value


def _start_heartbeat() -> None:
    """A daemon thread adding 1 to ``sfd/heartbeat/<rank>`` in the store every beat."""
    store, key = dist.distributed_c10d._get_default_store(), f"sfd/heartbeat/{rank()}"
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                store.add(key, 1)
            except Exception:  # the store is gone (its host died): nothing left to beat to
                return

    store.add(key, 1)
    thread = threading.Thread(target=beat, name="sfd-heartbeat", daemon=True)
    thread.start()
    _heartbeat.update(store=store, stop=stop, world=world_size(), rank=rank())


def lost_ranks() -> list[int] | None:
    """The ranks whose heartbeat stopped (watched for 3 beats), or ``None`` when the store
    itself cannot be reached (it lives with rank 0 or the launcher)."""
    store, world, me = _heartbeat["store"], _heartbeat["world"], _heartbeat["rank"]
    _heartbeat["checking"] = True  # a SIGTERM meanwhile waits for the answer
    try:
        before = [store.add(f"sfd/heartbeat/{r}", 0) for r in range(world)]
        time.sleep(3 * HEARTBEAT_S)
        after = [store.add(f"sfd/heartbeat/{r}", 0) for r in range(world)]
    except (RuntimeError, OSError):  # the store's errors (DistError is a RuntimeError)
        return None
    finally:
        _heartbeat["checking"] = False
    return [r for r in range(world) if r != me and after[r] == before[r]]


def _is_collective_failure(err: BaseException) -> bool:
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed")
    )


def _reason(err: BaseException) -> str:
    """The gist of a backend's error: its first line without the source location."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    first = re.sub(r"\[[^\]]*\.(cpp|cc|hpp|h):\d+\]\s*", "", first)
    return first.split(". This is typically")[0][:160]


def _signalled(err: BaseException | None) -> LostRankError | None:
    """A :class:`LostRankError` in ``err``'s chain (a library may wrap what a SIGTERM raised)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LostRankError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def lost_rank_error(err: BaseException) -> LostRankError:
    """The one line for a collective that failed because another rank is gone."""
    me, world = _heartbeat.get("rank", rank()), _heartbeat.get("world", world_size())
    lost = lost_ranks() if _heartbeat else []
    first = _reason(err)
    if lost is None:
        host = "the launcher" if me == 0 else "rank 0 or the launcher"
        who = f"{host} (the rendezvous store it holds cannot be reached)"
    elif lost:
        who = f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))}"
    else:
        who = "another rank (all heartbeats still run: it may hang or be unreachable)"
    return LostRankError(
        f"rank {me} of {world} stopped: lost {who} ({first}); outputs up to the last "
        f"checkpoint or finished file are intact: rerun the same command (or torchrun "
        f"--max-restarts) to resume"
    )


def _on_sigterm(signum, frame) -> None:
    if _heartbeat.get("checking") or _SIGTERMED:
        _SIGTERMED.append(signum)
        return  # naming the lost ranks, or already stopping: that line is the one to print
    _SIGTERMED.append(signum)  # torchrun may send it twice: one line, then exit
    raise LostRankError(
        f"rank {rank()} of {world_size()} stopped by SIGTERM (torchrun sends it to every rank "
        f"when one fails, and its report names that rank); outputs up to the last checkpoint "
        f"or finished file are intact: rerun the same command to resume"
    )


def _shutdown_after_failure() -> None:
    """:func:`shutdown`, which must not hang or fail when a peer is already gone."""
    with suppress(Exception):
        shutdown()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in one process)."""
    if is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size()
    return values


def collective_device() -> torch.device:
    """Where tensors must live for the current backend: the current CUDA device for NCCL."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (identity in one process)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of ``n`` items owned by ``rank`` (sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def all_gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) tensor in rank order; returned on CPU."""
    if not is_initialized():
        return local.cpu()
    device = collective_device()
    count = torch.tensor([len(local)], device=device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())].cpu() for p, c in zip(parts, counts, strict=True)])


def shutdown() -> None:
    """Destroy the default process group, if any (call at the end of an entry point)."""
    if _heartbeat:
        _heartbeat.pop("stop").set()
        _heartbeat.clear()
    if is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str | None = None) -> Iterator[torch.device]:
    """An entry point's process group: :func:`init_from_env` on entry (yields this rank's
    device), :func:`shutdown` on exit, also after a failure. Under a process group a failed
    collective or a SIGTERM is one :class:`~sfd.errors.LostRankError` naming the lost ranks."""
    try:
        dev = init_from_env(device)
    except Exception as err:
        if not _is_collective_failure(err):
            raise
        raise LostRankError(
            f"rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')} could not join the "
            f"other ranks ({_reason(err)}); nothing was done: rerun the same command"
        ) from err
    _SIGTERMED.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if is_initialized() else None
    try:
        yield dev
    except Exception as err:
        if previous is not None:  # failing: a SIGTERM from here on must not cut the line short
            _SIGTERMED.append(0)
        found = _signalled(err)
        if found is err:
            raise
        if found is not None:
            raise found from None
        if is_initialized() and _is_collective_failure(err):
            raise lost_rank_error(err) from err
        raise
    finally:
        if previous is not None and not _SIGTERMED:
            signal.signal(signal.SIGTERM, previous)
        if _heartbeat or is_initialized():
            _shutdown_after_failure()
