"""`openwit train`: train CLIP on OpenWIT shards, on a CPU, one GPU, or many with DDP (torchrun).

    openwit train --train-data 'OUT/shards/{00000..00099}.tar' --model RN50 --batch-size 256 --epochs 32
    torchrun --nproc_per_node 8 -m openwit train --train-data ... --batch-size 4096 ...

--batch-size is the global batch (the paper's 32,768): each of N ranks takes batch/N per step, and with
--accum-freq K each rank runs K micro-batches of batch/(N*K) per step. Writes into --logs: config.json (the
command and every option), metrics.jsonl (one JSON line per logged step and per epoch), checkpoints
epoch_E_step_S.pt (every --save-every steps and at each epoch end).
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import sys
import time
from collections import Counter

import torch

from openwit.errors import InputError
from training import checkpoint, data, schedule
from training.loss import ClipLoss


def parse_args(argv):
    p = argparse.ArgumentParser(prog="openwit train", description=__doc__.split("\n\n")[0])
    d = p.add_argument_group("data")
    d.add_argument("--train-data", action="append", required=True,
                   help="shards, brace ranges allowed: 'OUT/shards/{00000..00099}.tar'; several sources joined "
                        "by '::' or given as repeated options; any local, Beam filesystem (gs://, s3://...) "
                        "or 'pipe:CMD' path")
    d.add_argument("--train-data-weights", default=None,
                   help="'::'-separated share of each source (needs --resampled), e.g. '3::1'")
    d.add_argument("--train-num-samples", type=int, default=None,
                   help="samples per epoch (default: sum of sizes.json, or the expected count after balancing)")
    d.add_argument("--resampled", action="store_true", help="draw shards with replacement (large mixtures)")
    d.add_argument("--balance-t", type=float, default=None,
                   help="re-balance online: keep a sample of query q with probability min(1, t/count(q)) "
                        "(MetaCLIP), counts from the shard parquets' `queries` column")
    d.add_argument("--shuffle-buffer", type=int, default=1000, help="samples per worker in the shuffle buffer")
    d.add_argument("--workers", type=int, default=4, help="loader processes per rank")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="RN50", help="encoders model name: RN50, ViT-B/32, tiny-RN, ...")
    m.add_argument("--tokenizer", default=None, help="BPE merges file (default: CLIP's)")
    m.add_argument("--grad-checkpointing", action="store_true")
    m.add_argument("--torch-compile", action="store_true")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=256, help="global batch size")
    o.add_argument("--epochs", type=int, default=32)
    o.add_argument("--lr", type=float, default=5e-4)
    o.add_argument("--wd", type=float, default=0.2)
    o.add_argument("--beta1", type=float, default=0.9)
    o.add_argument("--beta2", type=float, default=0.98)
    o.add_argument("--eps", type=float, default=1e-6)
    o.add_argument("--warmup", type=int, default=2000, help="linear warmup steps")
    o.add_argument("--grad-clip-norm", type=float, default=None)
    o.add_argument("--accum-freq", type=int, default=1, help="micro-batches per step (gradient accumulation)")
    o.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="autocast precision; auto = bf16 on CUDA, fp32 on CPU")
    o.add_argument("--seed", type=int, default=0)
    dist_group = p.add_argument_group("distributed (ranks come from torchrun's environment)")
    dist_group.add_argument("--gather-with-grad", action=argparse.BooleanOptionalAction, default=True,
                            help="all-gather features with gradients (exactly the single-process loss)")
    dist_group.add_argument("--local-loss", action="store_true", help="each rank scores only its own rows")
    dist_group.add_argument("--dist-url", default="env://", help="torch.distributed init method")
    dist_group.add_argument("--dist-timeout", type=float, default=1800, help="seconds before a collective fails")
    dist_group.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    out = p.add_argument_group("output")
    out.add_argument("--logs", default="train-out", help="folder for checkpoints, metrics.jsonl, config.json")
    out.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps (and each epoch end)")
    out.add_argument("--log-every", type=int, default=10, help="metrics line every N steps")
    out.add_argument("--resume", default=None, help="checkpoint path, or 'latest' (the newest in --logs)")
    out.add_argument("--stop-at-step", type=int, default=None,
                     help="checkpoint and stop after this global step (split a run over time-limited jobs)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still written)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- setup

def init_distributed(args):
    """(rank, world size, device) from torchrun's environment variables; one process = rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if args.device:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method=args.dist_url,
                                rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=args.dist_timeout))
    return rank, world, device


def precision_of(args, device) -> torch.dtype | None:
    """The autocast dtype, None for fp32."""
    choice = args.precision
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def param_groups(model, wd: float):
    """CLIP's exclusions: no weight decay on gains and biases (any 1-d parameter: norms, biases, the logit
    scale), nor on embeddings (token, positional, class)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def build_model(args):
    import encoders

    if args.model not in encoders.available_models():
        raise InputError(f"--model {args.model!r} is unknown; available: {', '.join(encoders.available_models())}")
    tokenizer = encoders.Tokenizer(args.tokenizer)
    overrides = {"vocab_size": tokenizer.vocab_size} if args.tokenizer else {}
    return encoders.create(args.model, **overrides), overrides, tokenizer


class TextTokenizer:
    """Captions -> token ids at the model's context length (picklable, so loader workers get it)."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, texts):
        return self.tokenizer(texts, context_length=self.context_length)


def enable_grad_checkpointing(model) -> None:
    """Recompute each residual block's activations in the backward pass instead of keeping them: memory for
    compute, for batches that would not fit otherwise. Wraps the blocks' forward; the weights and their
    names (the OpenAI layout) stay as they are."""
    from torch.utils.checkpoint import checkpoint as recompute

    from encoders.modified_resnet import Bottleneck
    from encoders.transformer import ResidualAttentionBlock

    for module in model.modules():
        if isinstance(module, (ResidualAttentionBlock, Bottleneck)):
            forward = module.forward
            module.forward = lambda *a, _f=forward, **kw: recompute(_f, *a, use_reentrant=False, **kw)


def unwrap(model):
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


# ---------------------------------------------------------------------------------------------- steps

def train_step(model, loss_fn, optimizer, scaler, batches, args, device, dtype):
    """One optimiser step over `batches` (accum-freq micro-batches); returns the loss (float).

    With accumulation the contrastive loss still spans the whole step's batch, as open_clip does it: first
    every micro-batch's features without gradient, then each micro-batch again with gradient, its features
    put in place among the cached others, loss and backward: the gradients add up to the whole batch's.
    (A model with batch norm, as the ResNets, still sees micro-batch statistics.)"""
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())
    inputs = [(data.to_model_input(b["images"], device), b["texts"].to(device, non_blocking=True))
              for b in batches]
    if len(inputs) == 1:
        with autocast:
            image_f, text_f, scale = model(*inputs[0])
            loss = loss_fn(image_f, text_f, scale)
        scaler.scale(loss).backward()
        total = loss.detach()
    else:
        with torch.no_grad(), autocast:
            cached = [model(*x)[:2] for x in inputs]
        for j, x in enumerate(inputs):
            last = j == len(inputs) - 1
            with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
                with autocast:
                    image_f, text_f, scale = model(*x)
                    images = torch.cat([c[0] for c in cached[:j]] + [image_f] + [c[0] for c in cached[j + 1:]])
                    texts = torch.cat([c[1] for c in cached[:j]] + [text_f] + [c[1] for c in cached[j + 1:]])
                    # Each pass carries the gradient of its own features; the temperature's, once.
                    loss = loss_fn(images, texts, scale if j == 0 else scale.detach())
                scaler.scale(loss).backward()
        total = loss.detach()
    if args.grad_clip_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # CLIP: the temperature never goes below 1/100
        unwrap(model).logit_scale.clamp_(0, math.log(100))
    return float(total)


def _all_ranks(obj, world):
    """Every rank's `obj`, in rank order (one rank: [obj])."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


class Metrics:
    """metrics.jsonl on rank 0, and the progress bar."""

    def __init__(self, folder, rank, total_steps, show_bar):
        self.rank = rank
        self.file = open(os.path.join(folder, "metrics.jsonl"), "a") if rank == 0 else None
        self.bar = None
        if rank == 0 and show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True)

    def write(self, record):
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self):
        if self.bar:
            self.bar.close()
        if self.file:
            self.file.close()


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rank, world, device = init_distributed(args)
    try:
        return train(args, rank, world, device)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def train(args, rank, world, device) -> int:
    if args.batch_size % (world * args.accum_freq):
        raise InputError(f"--batch-size {args.batch_size} does not split over {world} ranks x --accum-freq "
                         f"{args.accum_freq}: use a multiple of {world * args.accum_freq}")
    torch.manual_seed(args.seed)
    model, overrides, tokenizer = build_model(args)
    weights = None
    if args.train_data_weights:
        weights = [float(w) for w in args.train_data_weights.split("::")]
    micro = args.batch_size // (world * args.accum_freq)
    loader = data.make_loader(
        args.train_data, batch_size=micro, tokenizer=TextTokenizer(tokenizer, model.context_length),
        image_size=model.visual.input_resolution, seed=args.seed, rank=rank, world_size=world,
        num_workers=args.workers, resampled=args.resampled, weights=weights, shuffle_buffer=args.shuffle_buffer,
        balance_t=args.balance_t, num_samples=args.train_num_samples, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader) // args.accum_freq
    if steps_per_epoch == 0:
        raise InputError(f"an epoch has {len(loader)} micro-batches, fewer than --accum-freq {args.accum_freq}")
    total_steps = steps_per_epoch * args.epochs

    if args.grad_checkpointing:
        enable_grad_checkpointing(model)
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, args.wd), lr=args.lr, betas=(args.beta1, args.beta2),
                                  eps=args.eps)
    dtype = precision_of(args, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    start_epoch, start_step, positions = 0, 0, None
    os.makedirs(args.logs, exist_ok=True)
    if args.resume:
        path = checkpoint.latest(args.logs) if args.resume == "latest" else args.resume
        if path is None:
            raise InputError(f"--resume latest: no checkpoint in {args.logs!r}")
        state = checkpoint.read(path)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, start_step = state["epoch"], state["step_in_epoch"]
        saved = state["data"]
        if saved["workers"] != loader.config.num_workers or saved["world_size"] != world:
            raise InputError(f"{path!r} was written with {saved['world_size']} ranks x {saved['workers']} loader "
                             "workers; resume with the same --workers and number of processes to continue "
                             "with exactly the same batches")
        positions = saved["positions"][rank]
        if start_step == steps_per_epoch:
            start_epoch, start_step, positions = start_epoch + 1, 0, None
        if rank == 0:
            print(f"resumed from {path} at epoch {start_epoch} step {start_step}", file=sys.stderr)
    elif rank == 0:
        with open(os.path.join(args.logs, "config.json"), "w") as f:
            json.dump({"command": sys.argv, "args": vars(args), "world_size": world,
                       "steps_per_epoch": steps_per_epoch}, f, indent=2)

    if args.torch_compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = ClipLoss(local_loss=args.local_loss, gather_with_grad=args.gather_with_grad)
    metrics = Metrics(args.logs, rank, total_steps, show_bar=not args.no_progress)
    if metrics.bar:
        metrics.bar.update(start_epoch * steps_per_epoch + start_step)

    def save(epoch, step_in_epoch, positions_now):
        all_positions = _all_ranks(positions_now, world)
        if rank != 0:
            return
        global_step = epoch * steps_per_epoch + step_in_epoch
        checkpoint.save(os.path.join(args.logs, checkpoint.NAME.format(epoch=epoch, step=global_step)), {
            "model_name": args.model, "model_overrides": overrides, "state_dict": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
            "step": global_step, "step_in_epoch": step_in_epoch, "args": vars(args), "tokenizer": args.tokenizer,
            "rng": checkpoint.rng_state(),
            "data": {"positions": all_positions, "workers": loader.config.num_workers, "world_size": world},
        })

    model.train()
    for epoch in range(start_epoch, args.epochs):
        step = start_step if epoch == start_epoch else 0
        positions = positions if epoch == start_epoch else None
        loader.set_epoch(epoch, start_step=step * args.accum_freq, positions=positions)
        positions = dict(positions or {})
        skipped, realised, kept = Counter(), Counter(), 0
        batches = iter(loader)
        tick, seen = time.perf_counter(), 0
        while step < steps_per_epoch:
            micro_batches = [next(batches) for _ in range(args.accum_freq)]
            for b in micro_batches:
                positions[b["worker"]] = b["position"]
                skipped.update(b["skipped"])
                for queries in b.get("queries", ()):
                    realised.update(queries)
                    kept += 1
            global_step = epoch * steps_per_epoch + step
            lr = schedule.cosine_lr(global_step, args.lr, args.warmup, total_steps)
            schedule.set_lr(optimizer, lr)
            loss = train_step(model, loss_fn, optimizer, scaler, micro_batches, args, device, dtype)
            step += 1
            seen += args.batch_size
            if step % args.log_every == 0 or step == steps_per_epoch:
                elapsed = time.perf_counter() - tick
                record = {"epoch": epoch, "step": global_step + 1, "loss": loss, "lr": lr,
                          "logit_scale": float(unwrap(model).logit_scale.detach().exp()),
                          "samples_per_s": seen / elapsed, "skipped": dict(skipped)}
                metrics.write(record)
                if metrics.bar:
                    metrics.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", scale=f"{record['logit_scale']:.1f}",
                                            sps=f"{record['samples_per_s']:.0f}")
                tick, seen = time.perf_counter(), 0
            if metrics.bar:
                metrics.bar.update(1)
            stop = args.stop_at_step is not None and global_step + 1 >= args.stop_at_step
            if (global_step + 1) % args.save_every == 0 or step == steps_per_epoch or stop:
                save(epoch, step, positions)
            if stop:  # the next job continues from here with --resume latest
                metrics.close()
                return 0
        del batches  # ends this epoch's loader workers
        epoch_skipped = sum(_all_ranks(skipped, world), Counter())
        epoch_realised = sum(_all_ranks(realised, world), Counter())
        epoch_kept = sum(_all_ranks(kept, world))
        record = {"epoch_end": epoch, "skipped": dict(epoch_skipped)}
        if args.balance_t is not None:
            # The realised per-query counts of this epoch's balancing: what the model actually saw per query.
            top = epoch_realised.most_common()
            record["balance"] = {"t": args.balance_t, "samples": epoch_kept, "queries_seen": len(top),
                                 "max_count": top[0][1] if top else 0, "top": top[:20]}
        metrics.write(record)
    metrics.close()
    return 0
