"""Build DeepSpeed's JIT-compiled ops that our training jobs load, once, in `make setup` (issue 19).

On a CPU machine DeepSpeed's gloo path loads its shared-memory collective op (deepspeed_shm_comm), which it
compiles on first use into TORCH_EXTENSIONS_DIR under torch's build lock. Compiled here, no training job ever
compiles it, so none can be killed midway and leave a lock behind for the next one to wait on (the train stage
also clears such stale locks: sppo.build_locks). Already built, this returns in about a second. GPU machines
(NCCL) load no JIT op: nothing to do there."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
    import torch

    if torch.cuda.is_available():
        print("deepspeed ops: CUDA machine, no JIT op to build")
        return 0
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    from sppo.build_locks import clear_stale_build_locks

    clear_stale_build_locks(Path(os.environ["TORCH_EXTENSIONS_DIR"]))
    ShareMemCommBuilder().load(verbose=False)
    print(f"deepspeed ops: deepspeed_shm_comm built in {os.environ['TORCH_EXTENSIONS_DIR']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
