"""Run thermosynth's CLI with FSDP on CPU processes (gloo), for the tests.

accelerate enters FSDP only from its GPU (and other accelerator) modes, although torch's FSDP2 shards and trains on
CPU processes over gloo. This launcher lets accelerate set itself up as usual for several CPU processes, then turns
that state into FSDP with the plugin accelerate built from the launch flags, so the tests exercise the training
loop's sharded paths (sharded EMA and optimizer state, gathered checkpoints and exports) on a machine without GPUs.
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # later AcceleratorState() copy it


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    from thermosynth.cli import main

    sys.exit(main())
