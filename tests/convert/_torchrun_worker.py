"""Run by test_distill_under_torchrun: distil a tiny BERT on 2 ranks, dump each rank's weights."""

import copy
import sys

import torch
import torch.distributed as dist
from _tiny import TINY

from liteffn.config import DenseConfig
from liteffn.convert import convert_, distill_

torch.set_num_threads(1)
torch.manual_seed(0)
teacher = TINY["bert"]().eval()
student = convert_(copy.deepcopy(teacher), DenseConfig(d_ff=16))
data = torch.randint(0, 99, (16, 10), generator=torch.Generator().manual_seed(3))
rep = distill_(student, teacher, data, batch_size=4, layer_steps=20, e2e_steps=4, progress=False)
rank = dist.get_rank()
assert dist.get_world_size() == 2
torch.save({"state": student.state_dict(), "report": rep}, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
