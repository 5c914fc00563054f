"""One rank of the 2-process gloo test (tests/test_train_ddp.py runs it twice). Writes what it saw to JSON.

Checks, on its rank: the loss over features gathered from both ranks equals the single-process loss over the
whole global batch, and the gradient reaching its own features is the single-process gradient times the
world size (DDP then averages parameter gradients over ranks: the single-process step). Then lists the keys
its loader reads, and, if asked, runs `openwit train` for a few steps under DDP."""

import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from train_helpers import WordTokenizer  # noqa: E402
from training import data  # noqa: E402
from training.loss import ClipLoss  # noqa: E402


def loss_checks(rank, world):
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(8, 16, generator=g) + image, dim=-1)
    scale = torch.tensor(10.0)
    ref_image, ref_text = image.clone().requires_grad_(), text.clone().requires_grad_()
    # The single-process loss, written out (ClipLoss would gather, the process group being up).
    logits = scale * ref_image @ ref_text.T
    labels = torch.arange(8)
    reference = (torch.nn.functional.cross_entropy(logits, labels)
                 + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    reference.backward()
    rows = slice(rank * 4, rank * 4 + 4)
    out = {}
    for name, local_loss in (("global", False), ("local", True)):
        mine_image, mine_text = image[rows].clone().requires_grad_(), text[rows].clone().requires_grad_()
        loss = ClipLoss(local_loss=local_loss, gather_with_grad=True)(mine_image, mine_text, scale)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        out[name] = {
            "loss": float(loss), "mean_loss": float(mean_loss) / world, "reference": float(reference),
            "grad_ok": bool(torch.allclose(mine_image.grad, world * ref_image.grad[rows], atol=1e-6)
                            and torch.allclose(mine_text.grad, world * ref_text.grad[rows], atol=1e-6)),
        }
    return out


def main():
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store, shards, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    train_argv = sys.argv[4:]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    result = {"rank": rank, "loss": loss_checks(rank, world)}
    loader = data.make_loader(shards, batch_size=4, tokenizer=WordTokenizer(), image_size=16, rank=rank,
                              world_size=world, num_workers=1, fixed_length=False)
    loader.set_epoch(0)
    result["keys"] = [k for b in loader for k in b["keys"]]
    dist.destroy_process_group()
    if train_argv:
        from training import train

        result["train_exit"] = train.main(train_argv + ["--dist-url", f"file://{store}-train"])
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
