"""A full replay of a baseline (15 epochs, all 60,000 training images, test set after every
epoch) on one GPU, timed for each loop variant in turn. benchmarks/gpu.sh runs it.

    python benchmarks/gpu_replay.py [baseline-6] [--epochs N]
"""

import argparse
import json
import time

import torch

from nas import data, spec, train

VARIANTS = {
    "CUDA graphs (default)": {},
    "eager (--no graphs)": {"graphs": False},
    "CUDA graphs + bf16 autocast": {"bf16": True},
    "CUDA graphs + channels_last": {"channels_last": True},
    # not measured yet (session 5 had no GPU): cuDNN's autotuner, inductor's fused kernels
    "CUDA graphs + cudnn.benchmark": {"cudnn_benchmark": True},
    "CUDA graphs + torch.compile": {"compiled": True},
    "CUDA graphs + channels_last + cudnn.benchmark + torch.compile": {
        "channels_last": True,
        "cudnn_benchmark": True,
        "compiled": True,
    },
}

ap = argparse.ArgumentParser()
ap.add_argument("config", nargs="?", default="baseline-6")
ap.add_argument("--epochs", type=int)
ap.add_argument("--device", default="cuda")
ap.add_argument("--train-limit", type=int, help="a dry run off the GPU")
args = ap.parse_args()
config = spec.resolve(args.config)
split = data.make_split(data.load_mnist(download=False), "test", train_limit=args.train_limit, device=args.device)
train.train(config, split, 0, args.device, epochs=1)  # warm-up: CUDA context, cuDNN, kernels
gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
print(f"{config.name}: {spec.param_count(config):,} params on {gpu}, torch {torch.__version__}")
for name, options in VARIANTS.items():
    if options.get("graphs") is False and not args.device.startswith("cuda"):
        continue
    options = dict(options)
    torch.backends.cudnn.benchmark = options.pop("cudnn_benchmark", False)
    t0 = time.perf_counter()
    _, h = train.train(config, split, 0, args.device, epochs=args.epochs, **options)
    wall = time.perf_counter() - t0
    row = {
        "variant": name,
        "epochs": len(h.epochs),
        "seconds": round(wall, 2),
        "first_epoch_s": round(h.epochs[0].seconds, 2),
        "later_epoch_s": round(sum(e.seconds for e in h.epochs[1:]) / max(1, len(h.epochs) - 1), 3),
        "test_acc_last": h.epochs[-1].eval_acc,
        "test_acc_best": max(e.eval_acc for e in h.epochs),
    }
    print(json.dumps(row), flush=True)
