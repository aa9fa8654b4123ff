"""Where a result came from: code version, library versions and machine, stored in every run record.

Everything here is best effort and never raises: a missing git or an odd platform must not cost a finished run.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mllmtune.runtime import world_size

PACKAGES = ("mllmtune", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes")
_PKG_DIR = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    """Output of a git command run in the package's folder, or None when that is not possible."""
    try:
        done = subprocess.run(["git", *args], cwd=_PKG_DIR, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding this package; both None outside a git checkout."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain")
    return {"commit": head.strip() or None, "dirty": None if status is None else bool(status.strip())}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata, so torch is not imported just to read its version."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except (metadata.PackageNotFoundError, ValueError):
            versions[name] = None
    if "mllmtune" in versions and versions["mllmtune"] is None:  # running from a checkout that is not installed
        from mllmtune import __version__

        versions["mllmtune"] = __version__
    return versions


def device_name() -> str:
    """The CUDA device name if torch is already loaded and sees a GPU, else "cpu"; never imports torch itself."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "cpu"
    try:
        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(torch.cuda.current_device()))
    except Exception:  # a broken driver must not fail the run record
        pass
    return "cpu"


def provenance() -> dict[str, Any]:
    """Everything needed to tell two runs' environments apart."""
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = None
    return {
        "git": git_info(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": hostname,
        "device": device_name(),
        "cpu_count": os.cpu_count(),
        "world_size": world_size(),  # processes of a torchrun / accelerate launch
        "argv": list(sys.argv),
    }


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _peak_cuda_mb() -> float | None:
    """CUDA peak allocation, only when torch is loaded and CUDA was actually initialised by this process."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return None
        return float(torch.cuda.max_memory_allocated()) / (1024 * 1024)
    except Exception:
        return None


def peak_memory() -> dict[str, float | None]:
    """Both peaks: host RSS of this process and CUDA memory allocated (None when CUDA is not in use)."""
    return {"peak_rss_mb": _peak_rss_mb(), "peak_cuda_mb": _peak_cuda_mb()}


def peak_memory_mb() -> float | None:
    """The peak that limits the run: CUDA allocation when CUDA is in use, else the process's peak RSS."""
    peaks = peak_memory()
    return peaks["peak_cuda_mb"] if peaks["peak_cuda_mb"] is not None else peaks["peak_rss_mb"]
