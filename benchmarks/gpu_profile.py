"""Where a training step's GPU time goes: torch.profiler over eager steps of a config (CUDA
graphs off, so that every kernel is seen), kernels ranked by total device time, per step.
benchmarks/gpu.sh runs it.

    python benchmarks/gpu_profile.py [baseline-6] [--steps 100] [--options JSON ...]

Each --options (train.Loop's fields, e.g. '{"channels_last": true}') is profiled in turn.
"""

import argparse
import json

from torch.profiler import ProfilerActivity, profile

from nas import data, spec, train

ap = argparse.ArgumentParser()
ap.add_argument("config", nargs="?", default="baseline-6")
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--device", default="cuda")
ap.add_argument("--options", action="append", type=json.loads, help="train.Loop fields (default: {})")
ap.add_argument("--top", type=int, default=25, help="kernels listed per profile")
args = ap.parse_args()
config = spec.resolve(args.config)
n = args.steps * config.recipe.batch_size
split = data.make_split(data.load_mnist(download=False), "test", train_limit=n, device=args.device)
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
for options in args.options or [{}]:
    loop = train.Loop(**{"graphs": False, **options})
    train.train(config, split, 0, args.device, epochs=1, loop=loop)  # warm-up: cuDNN's choices
    with profile(activities=activities) as prof:
        train.train(config, split, 0, args.device, epochs=1, loop=loop)
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in kernels)
    per_step = f"{launches / args.steps:.0f} kernels and {total / args.steps / 1000:.3f} ms of kernel time per step"
    print(f"{config.name} {json.dumps(options)}: {args.steps} eager steps + 1 evaluation: {per_step}")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[: args.top]:
        print(f"{e.self_device_time_total / args.steps:8.1f} us/step {e.count / args.steps:5.1f}/step  {e.key[:90]}")
