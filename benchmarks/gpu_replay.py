"""A full replay of a baseline (15 epochs, all 60,000 training images, test set after every
epoch) on one GPU, timed for each loop variant in turn. benchmarks/gpu.sh runs it.

    python benchmarks/gpu_replay.py [baseline-6] [--epochs N]
"""

import argparse
import json
import time

import torch

from nas import data, spec, train

VARIANTS = {  # each run in a process of its own (--variant): cuDNN caches its choices per shape
    "default: CUDA graphs, a rotation pass per epoch, cuDNN heuristics mode B, fused ReLU/BatchNorm/Dropout": {},
    "default with cuDNN's BatchNorm (fused=False, as NAS_FUSED=0)": {"fused": False},
    "channels_last (not fused)": {"channels_last": True},
    "channels_last + cudnn.benchmark (not fused)": {"channels_last": True, "cudnn_benchmark": True},
    "eager (no CUDA graphs), fused": {"graphs": False, "fused": True},
    "eager (no CUDA graphs), cuDNN's BatchNorm": {"graphs": False, "fused": False},
    # measured on an H100 (15 epochs, seconds), each variant in a fresh process; logs in
    # results/evidence/gpu/ (docs/performance.md lists which loop each log ran):
    # fused against cuDNN's BatchNorm (replay-fused-vs-cudnn.log, replay-eager-fused-vs-cudnn.log,
    # fused-default-replay-command-bench-search-100.log): cuDNN's BatchNorm 5.20-5.23 (0.346-0.347 s
    # an epoch); fused 4.38 (0.255 s an epoch) with Triton's kernel cache warm and a warm-up not
    # fused, 10.34 on a machine's first run (6.76 s first epoch: compiling the four kernels, cached
    # on disk afterwards); fused with a fused warm-up (the default) 3.87-3.92 (0.257 s an epoch),
    # mode A 4.34; eager, 4 epochs: fused 7.05-7.80 (1.77-1.99 s an epoch), cuDNN's BatchNorm
    # 5.94-6.05 (1.45-1.51), so fused needs graphs.
    # cuDNN's BatchNorm, torch's default heuristics (mode A) against mode B (replay-heuristics-mode-b.log,
    # replay-mode-b-*-command.log, replay-two-stage-batchnorm.log, replay-layouts-native-bn-autotune.log,
    # replay-tf32-autotune-batchnorm-alone.log): mode A 5.64-5.71; mode B 5.20-5.22 (0.346 s an epoch);
    # channels_last 5.61, with mode B 5.79; BatchNorm on torch's kernels (torch.native_batch_norm) +
    # channels_last 5.52, with mode B 5.66; cuDNN autotuning (cudnn.benchmark) + channels_last:
    # 0.312-0.314 s an epoch once tuned, but a first epoch of 0.84-8.89 s (0.45-0.59 untuned), 5.23,
    # 5.34, 13.26 in all (+ torch's BatchNorm: 5.73, 12.69); TF32 off in the steps' convolutions +
    # channels_last 5.51-5.56; in one process: BatchNorm by two-stage reductions (per image over
    # H x W, then over the batch, an autograd.Function) 7.15-7.88 (many small kernels: 118.7 against
    # cuDNN's 100.8 us a call for 128 x 22 x 26 x 26, gpu_batchnorm.py).
    # cuDNN's BatchNorm, mode A, a rotation pass per epoch (replay-compile-bf16-autotune.log,
    # replay-rotation-pass-*.log, replay-batchnorm-kernels-profile.log,
    # replay-tf32-native-bn-autotune-profile.log), not used: rotation inside the step 5.92 against
    # 5.69; channels_last alone 5.52-5.58; no TF32 in cuDNN 5.58-5.62; eager (no CUDA graphs)
    # 20.0-21.5; bf16 autocast 9.7; torch.compile 0.31 s/epoch once compiled, but 35 s to compile;
    # fused SGD 5.62-5.66 against foreach 5.67; BatchNorm on torch's kernels instead of cuDNN's 8.04,
    # with channels_last 5.38-5.47; BatchNorm by torch.var_mean over (0, 2, 3) and a hand-written
    # backward 7.63
}

ap = argparse.ArgumentParser()
ap.add_argument("config", nargs="?", default="baseline-6")
ap.add_argument("--epochs", type=int)
ap.add_argument("--device", default="cuda")
ap.add_argument("--train-limit", type=int, help="a dry run off the GPU")
ap.add_argument("--variant", type=int, action="append", help="run only these (0-based indices)")
args = ap.parse_args()
config = spec.resolve(args.config)
split = data.make_split(data.load_mnist(download=False), "test", train_limit=args.train_limit, device=args.device)
train.train(config, split, 0, args.device, epochs=1)  # warm-up: CUDA context, cuDNN, kernels
gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
print(f"{config.name}: {spec.param_count(config):,} params on {gpu}, torch {torch.__version__}")
for i, (name, options) in enumerate(VARIANTS.items()):
    if args.variant and i not in args.variant:
        continue
    options = dict(options)
    torch.backends.cudnn.benchmark = options.pop("cudnn_benchmark", False)  # process-wide
    t0 = time.perf_counter()
    try:
        _, h = train.train(config, split, 0, args.device, epochs=args.epochs, loop=train.Loop(**options))
    except Exception as e:  # one broken variant must not cost the others' measurements
        print(json.dumps({"variant": name, "error": repr(e)[:300]}), flush=True)
        continue
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
