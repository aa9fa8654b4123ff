"""Process set-up for heavy commands: torch threads and quiet third-party logging (our progress display rules)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Silence library chatter that would break the live display; real errors still raise."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional kernel package is missing.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def setup() -> None:
    import torch

    quiet_libraries()
    # Under a multi-process launch the processes of one machine share its cores.
    share = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, int(os.environ.get("MLLMTUNE_THREADS", share))))


# glibc's M_MMAP_THRESHOLD parameter of mallopt(3), and the block size from which freed memory goes straight back.
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
RELEASE_FROM_BYTES = 1 << 20
RELEASE_UNSUPPORTED = "the C library has no mallopt (glibc only)"


def release_freed_memory() -> str | None:
    """Pin glibc's mmap threshold at 1 MiB for this process; returns why it could not, or None.

    Why: glibc serves large blocks from its heap once the first one is freed (its threshold then rises with each
    freed block, up to 32 MiB), and freed heap blocks stay resident. Training frees activations and temporaries of
    1-13 MB every step, and at the peak of a 150 M model's LoRA or QLoRA step on CPU, 318-551 MB of the heap were
    such free blocks against 355-397 MB in use (glibc's `mallinfo2`). Blocks of 1 MiB or more then come from
    `mmap` and go back to the system when freed, which costs a page fault per 4 KiB page on every reuse. No library
    offers this: PyTorch's CPU allocator calls glibc directly and has no caching or release setting.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return RELEASE_UNSUPPORTED
    if mallopt(_M_MMAP_THRESHOLD, RELEASE_FROM_BYTES) != 1:
        return "mallopt refused the threshold"
    return None


# Where glibc's own dynamic threshold stops rising on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
KEEP_BELOW_BYTES = 32 << 20


def keep_freed_memory() -> None:
    """Undo `release_freed_memory` as far as glibc allows: blocks under 32 MiB come from the heap again.

    glibc has no call that brings its dynamic threshold back once it was set, so the threshold goes to the ceiling
    that dynamic threshold climbs to (the size of the largest block freed so far, at most 32 MiB). Training in one
    process after another (`mllmtune bench`) then runs with a heap as it would have had after a few steps."""
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW_BYTES)
        mallopt(_M_TRIM_THRESHOLD, 2 * KEEP_BELOW_BYTES)  # as glibc's dynamic setting pairs them


def releases_by_default(model) -> bool:
    """`release_freed_memory`'s default: on when the model holds 4-bit weights in host memory (strategy `qlora` on
    CPU). Memory is what that strategy is chosen for, and on CPU the heap's resident freed blocks cancel much of
    what its 4-bit weights save (README, Performance: measured on a 150 M model). Off where glibc is missing."""
    four_bit_on_cpu = any(type(p).__name__ == "Params4bit" and p.device.type == "cpu" for p in model.parameters())
    return four_bit_on_cpu and can_release_freed_memory()


def _mallopt():
    """glibc's mallopt, or None (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "mallopt", None) if name else None


def can_release_freed_memory() -> bool:
    """Whether `release_freed_memory` would work here (changes nothing)."""
    return _mallopt() is not None


# A multi-process launch (`torchrun` or `accelerate launch`): every process trains; only the main one scores, saves
# and writes records, while the others wait at the next collective. Scoring a large model can take long, so the
# collectives wait this long instead of torch's default 30 minutes.
DISTRIBUTED_TIMEOUT_S = 6 * 3600


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def agree(value):
    """The main process's `value` on every process of a multi-process launch; `value` itself otherwise."""
    if world_size() == 1:
        return value
    from datetime import timedelta

    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(timeout=timedelta(seconds=DISTRIBUTED_TIMEOUT_S))  # the state the trainers join later
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave_process_group(wait: bool = False) -> None:
    """Destroy this process's process group, if a multi-process launch made one, before the interpreter exits.

    Left to interpreter shutdown, a gloo process group could be torn down with its threads still running: a process
    that had finished training while the main one was still scoring sometimes died with "terminate called without
    an active exception" (SIGABRT), and the launcher then stopped the main process too. Destroying the group first
    made that rarer but not gone (2 of 31 launches of the two-process GRPO test still aborted the finished process
    after the main one had printed its summary), so after a run that succeeded everywhere (`wait`), every process
    first waits for the others: none tears its end down under a peer still using the group. Not after a failure,
    where a peer may be inside another collective and would wait for the barrier until the timeout.
    """
    import sys

    if "torch.distributed" not in sys.modules:  # nothing was launched; keep torch off this path
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def bf16_is_fast() -> bool:
    """True where bf16 autocast speeds training up: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX tiles.

    Elsewhere bf16 is emulated and slower than float32, so callers that only want speed fall back to float32.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private probes; a missing one counts as no
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
