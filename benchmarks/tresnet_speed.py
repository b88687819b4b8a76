r"""TResNet-M speed on this CPU: Keras next to PyTorch (timm), and training.

    python benchmarks/tresnet_speed.py [--threads=N] [--stages] [--nojax]
    python benchmarks/tresnet_speed.py --tiny --nojax   # CI smoke run, not timed

Needs torch and timm for the PyTorch side (`--notorch` leaves it out).
What it does, in one run on the same CPU and thread count:

1. Inference, TResNet-M, batch 16, 224 px, float32. PyTorch: timm's
   `tresnet_m` (random weights) in eval mode under `torch.inference_mode`,
   in a subprocess (torch and TensorFlow in one process are fragile),
   which also saves its weights. Keras: those weights converted with
   `keras_csl.models.convert_checkpoint`; the logits must match timm's
   (else the script fails: a fast wrong model is no result). Keras is timed
   as a `tf.function` without and with XLA (`jit_compile=True`), and on JAX
   (jitted `predict_on_batch`, subprocess) unless `--nojax`. Printed: ms per
   batch (median of `--repeats` batches after warm-up), images/s, and
   each one's ratio to PyTorch (> 1: faster than PyTorch).
2. With `--stages`: the same per stage (stem, layer1..layer4, head), for
   the TensorFlow graph and PyTorch, to show where time goes.
3. Training step, batch 16 (`--train_batch`), 224 px: TResNet-M next to
   Keras's ResNet-50, same CSL loss, Adam, `train_on_batch` (traced once;
   the tracing time is printed apart). Printed: s per step, images/s, ratio.

Time on 2 quiet cores: 4 min 42 s with `--stages` (`/usr/bin/time`,
2026-11-30; docs/MODELS.md, section 10, has that run's figures).
Timings on a loaded machine are meaningless: run it alone.
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

VARIANT = "tresnet_m"
SEED = 0
# Keras float32 against timm float32, both summing 2048 features: agree to
# about 1e-5 of the largest logit; more means a different model.
MATCH_TOLERANCE = 1e-3
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")
# Keras layer that ends each stage of TResNet-M (layers 3, 4, 11, 3).
KERAS_STAGE_ENDS = {
    "stem": "conv1_act", "layer1": "layer1_2_act", "layer2": "layer2_3_act",
    "layer3": "layer3_10_act", "layer4": "layer4_2_act", "head": "pool",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train_batch", type=int, default=16)
    parser.add_argument("--train_steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--nojax", action="store_true")
    parser.add_argument("--notorch", action="store_true")
    parser.add_argument("--notrain", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: 64 px, batch 2, one repeat, eager training "
                        "(not timings)")
    parser.add_argument("--worker", choices=["torch", "jax"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.image_size, args.repeats = 2, 64, 1
        args.train_batch, args.train_steps = 2, 1
    return args


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fixed_batch(args):
    rng = np.random.default_rng(SEED)
    return rng.uniform(0, 255, (args.batch, args.image_size, args.image_size, 3)).astype("float32")


# --- PyTorch side (subprocess) -------------------------------------------


def torch_worker(args):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    model = timm.create_model(VARIANT, pretrained=False, num_classes=1000).eval()
    with torch.no_grad():  # timm zero-initialises each block's last scale
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.workdir, "tresnet_m.safetensors"))
    x = torch.from_numpy(fixed_batch(args)).permute(0, 3, 1, 2).contiguous() / 255.0
    result = {"torch": torch.__version__, "timm": timm.__version__,
              "threads": torch.get_num_threads()}
    with torch.inference_mode():
        logits = model(x)
        result["ms"] = median_ms(lambda: model(x), args.repeats)
        if args.stages:
            body = model.body
            prefixes = [body[:2], body[:3], body[:4], body[:5], body[:6], model]
            cumulative = [median_ms(lambda m=m: m(x), args.repeats) for m in prefixes]
            result["stages"] = _differences(cumulative)
    np.save(os.path.join(args.workdir, "torch_logits.npy"), logits.numpy())
    with open(os.path.join(args.workdir, "torch.json"), "w") as handle:
        json.dump(result, handle)


def _differences(cumulative):
    previous, result = 0.0, []
    for value in cumulative:
        result.append(value - previous)
        previous = value
    return dict(zip(STAGES, result))


def run_worker(args, worker, backend="tensorflow"):
    command = [sys.executable, os.path.abspath(__file__), f"--worker={worker}",
               f"--workdir={args.workdir}", f"--batch={args.batch}",
               f"--image_size={args.image_size}", f"--repeats={args.repeats}",
               f"--threads={args.threads}"] + (["--stages"] if args.stages else [])
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"The {worker} worker failed:\n{result.stderr[-4000:]}")
    with open(os.path.join(args.workdir, f"{worker}.json")) as handle:
        return json.load(handle)


# --- Keras side ------------------------------------------------------------


def jax_worker(args):
    import keras

    import keras_csl.models

    model = keras_csl.models.load_model(os.path.join(args.workdir, "tresnet_m.keras"))
    x = fixed_batch(args)
    logits = np.asarray(model.predict_on_batch(x))
    ms = median_ms(lambda: np.asarray(model.predict_on_batch(x)), args.repeats)
    np.save(os.path.join(args.workdir, "jax_logits.npy"), logits)
    with open(os.path.join(args.workdir, "jax.json"), "w") as handle:
        json.dump({"ms": ms, "keras": keras.__version__}, handle)


def keras_inference(args, model, torch_logits):
    import tensorflow as tf

    x = tf.constant(fixed_batch(args))
    results = {}
    for label, jit in (("keras tf graph", False), ("keras tf XLA", True)):
        fn = tf.function(lambda images: model(images, training=False), jit_compile=jit)
        start = time.perf_counter()
        logits = fn(x).numpy()
        compile_s = time.perf_counter() - start
        check_match(label, logits, torch_logits)
        results[label] = dict(ms=median_ms(lambda: fn(x).numpy(), args.repeats),
                              first_call_s=compile_s)
    return results


def keras_stages(args, model):
    import keras
    import tensorflow as tf

    network = model.get_layer(VARIANT)
    x = tf.constant(fixed_batch(args) / 255.0)
    cumulative = []
    for stage in STAGES:
        prefix = keras.Model(network.input, network.get_layer(KERAS_STAGE_ENDS[stage]).output)
        fn = tf.function(lambda images, m=prefix: m(images, training=False))
        cumulative.append(median_ms(lambda: fn(x).numpy(), args.repeats))
    return _differences(cumulative)


def check_match(label, logits, reference):
    if reference is None:
        return
    error = float(np.abs(logits - reference).max() / np.abs(reference).max())
    if not error <= MATCH_TOLERANCE:
        raise SystemExit(
            f"{label}: logits differ from timm's by {error:.2e} of the largest "
            f"(tolerance {MATCH_TOLERANCE}): not the same model, no timing."
        )


def training(args):
    import keras

    import keras_csl
    from keras_csl.models import build_model

    rng = np.random.default_rng(SEED)
    size, batch = args.image_size, args.train_batch
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.choice([-1.0, 0.0, 1.0], (batch, 80)).astype("float32")
    results = {}
    for backbone in (VARIANT, "resnet50"):
        keras.utils.set_random_seed(SEED)
        model = build_model(backbone, num_classes=80, image_size=size, weights=None)
        # The tiny smoke run skips the minute of tracing: eager, not timed.
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras_csl.ClassAwareSelectiveLoss(num_classes=80),
                      run_eagerly=args.tiny)
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        first = time.perf_counter() - start
        ms = median_ms(lambda: model.train_on_batch(images, labels), args.train_steps, warmup=1)
        results[backbone] = dict(ms=ms, first_call_s=first)
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker == "jax":
        return jax_worker(args)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("keras_csl").setLevel(logging.ERROR)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per stage is intended

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, args.threads))
    import keras

    from keras_csl.models import load_model
    from keras_csl.models.convert_checkpoint import convert_checkpoint

    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        rows, torch_ms, torch_logits = {}, None, None
        print(f"TResNet-M inference, batch {args.batch}, {args.image_size} px, "
              f"float32, {args.threads} threads{' (tiny smoke run)' if args.tiny else ''}")
        if args.notorch:
            from keras_csl.models import build_model

            model = build_model(VARIANT, 1000, args.image_size)
            model.save(os.path.join(workdir, "tresnet_m.keras"))
        else:
            torch_info = run_worker(args, "torch")
            torch_ms = torch_info["ms"]
            rows[f"pytorch {torch_info['torch']} timm {torch_info['timm']}"] = dict(ms=torch_ms)
            torch_logits = np.load(os.path.join(workdir, "torch_logits.npy"))
            convert_checkpoint(os.path.join(workdir, "tresnet_m.safetensors"),
                               os.path.join(workdir, "tresnet_m.keras"),
                               image_size=args.image_size)
        model = load_model(os.path.join(workdir, "tresnet_m.keras"))
        rows.update(keras_inference(args, model, torch_logits))
        if not args.nojax:
            jax_info = run_worker(args, "jax", backend="jax")
            check_match("keras jax", np.load(os.path.join(workdir, "jax_logits.npy")), torch_logits)
            rows[f"keras {jax_info['keras']} jax jit"] = dict(ms=jax_info["ms"])
        print(f"{'':34s} {'ms/batch':>9s} {'images/s':>9s} {'vs pytorch':>10s}")
        for label, row in rows.items():
            ratio = f"{torch_ms / row['ms']:.2f}x" if torch_ms else "-"
            print(f"{label:34s} {row['ms']:9.1f} {args.batch * 1000 / row['ms']:9.1f} {ratio:>10s}")
        for label, row in rows.items():
            if "first_call_s" in row:
                print(f"  {label}: first call (tracing/compiling) {row['first_call_s']:.1f} s")

        if args.stages:
            keras_ms = keras_stages(args, model)
            torch_stage = torch_info["stages"] if torch_ms else {}
            print(f"\nper stage, ms/batch: {'keras tf graph':>15s} {'pytorch':>9s}")
            for stage in STAGES:
                other = torch_stage.get(stage)
                print(f"  {stage:8s} {keras_ms[stage]:24.1f} "
                      f"{'-' if other is None else f'{other:9.1f}'}")

        if not args.notrain:
            train = training(args)
            base = train["resnet50"]["ms"]
            print(f"\ntraining step, batch {args.train_batch}, {args.image_size} px, CSL loss, "
                  f"Adam, keras {keras.__version__} tensorflow {tf.__version__}")
            print(f"{'':12s} {'s/step':>8s} {'images/s':>9s} {'vs resnet50':>11s} {'first step s':>13s}")
            for backbone, row in train.items():
                print(f"{backbone:12s} {row['ms'] / 1000:8.2f} "
                      f"{args.train_batch * 1000 / row['ms']:9.1f} {base / row['ms']:10.2f}x "
                      f"{row['first_call_s']:13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
