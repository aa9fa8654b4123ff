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
    threads = int(os.environ.get("MLLMTUNE_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(max(1, threads))
