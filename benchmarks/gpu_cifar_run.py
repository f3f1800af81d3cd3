"""Phase 5 of benchmarks/run_gpu_checks.sh: a short real CIFAR-10 run on the GPU, ResNet-20
unshared and shared side by side, through the real command line.

The archive is never in the repository: copy it into the ignored folder ``data/`` of the
checkout (docs/gpu.md). Either

- ``data/cifar-10-python.tar.gz``: the official archive (or a rebuilt copy of it), or
- ``data/cifar10-jpeg.tar.xz``: the 60,000 images as JPEG files ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg`` (class folders named as in CIFAR-10's ``batches.meta``); decoded here
  with Pillow into the official python layout first.

Then ``minires prepare cifar10 --from ... --allow-checksum-mismatch`` (a rebuilt archive does
not have the official md5; the prepared file records that), and two ``minires train --device
cuda`` processes at once (unshared and ``--share block``; the GPU has room for both), each
stopped with SIGTERM in time for everything to end within ``--seconds`` of the start
(preparation included; minires then keeps the finished epochs).

Usage:

    python benchmarks/gpu_cifar_run.py --data data --work DIR --out OUTDIR/cifar_runs.json \
        --epochs 3 --seconds 150 [--dry-run]

Exit status: 0 done; 1 failed; 3 no archive in ``--data`` (the phase is skipped); 4 too little
time left after preparing to train. ``--dry-run`` prepares the dataset and stops before
training.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

OFFICIAL = "cifar-10-python.tar.gz"
JPEG = "cifar10-jpeg.tar.xz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
SHARES = ("none", "block")
NO_ARCHIVE, NO_TIME = 3, 4
STOP_GRACE = 30      # seconds a stopped run gets to save and exit before it is killed
MIN_TRAINING = 30    # seconds of training below which starting the runs is pointless


def find_archive(data: Path):
    for name in (OFFICIAL, JPEG):
        if (data / name).is_file():
            return data / name
    return None


def _decode(payloads: list) -> np.ndarray:
    """JPEG bytes -> ``(n, 3072)`` uint8 rows of R, G, B planes (CIFAR's layout)."""
    from PIL import Image
    rows = []
    for payload in payloads:
        image = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"), dtype=np.uint8)
        if image.shape != (32, 32, 3):
            raise ValueError(f"a JPEG of {image.shape}, expected 32x32 RGB")
        rows.append(image.transpose(2, 0, 1).reshape(-1))
    return np.stack(rows) if rows else np.zeros((0, 3072), np.uint8)


def jpeg_tree_to_python_layout(archive: Path, folder: Path) -> dict:
    """Decode ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` from ``archive`` and write the
    official python layout (``data_batch_1..5``, ``test_batch``, ``batches.meta``: pickled
    dicts) into ``folder``; returns the image count of each split."""
    files = {"train": {c: [] for c in CLASSES}, "test": {c: [] for c in CLASSES}}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and member.name.endswith(".jpg") and len(parts) >= 3 \
                    and parts[-3] in files and parts[-2] in CLASSES:
                files[parts[-3]][parts[-2]].append((member.name, tar.extractfile(member).read()))
    jobs = [(split, c) for split in files for c in CLASSES]
    # Pillow decodes with the GIL released, so threads use every core
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        decoded = dict(zip(jobs, pool.map(
            _decode, [[p for _, p in sorted(files[s][c])] for s, c in jobs])))
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    rng = np.random.default_rng(0)  # classes mixed within batches, as in the official archive
    for split, names in (("train", [f"data_batch_{b}" for b in range(1, 6)]),
                         ("test", ["test_batch"])):
        data = np.concatenate([decoded[(split, c)] for c in CLASSES])
        labels = np.concatenate([np.full(len(decoded[(split, c)]), i)
                                 for i, c in enumerate(CLASSES)])
        order = rng.permutation(len(data))
        counts[split] = len(data)
        for name, part in zip(names, np.array_split(order, len(names))):
            batch = {"data": data[part], "labels": [int(v) for v in labels[part]]}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)},
                                                       protocol=2))
    return counts


def minires(*args, **kwargs):
    """The real command line, in this interpreter."""
    return subprocess.run([sys.executable, "-m", "minires", *args], check=False, **kwargs)


def prepare(archive: Path, work: Path) -> dict:
    source, info = archive, {"archive": archive.name}
    if archive.name == JPEG:
        start = time.perf_counter()
        source = work / "cifar-10-batches-py"
        info["decoded_images"] = jpeg_tree_to_python_layout(archive, source)
        info["decode_s"] = round(time.perf_counter() - start, 1)
        print(f"cifar: decoded {info['decoded_images']} JPEG images in {info['decode_s']} s",
              flush=True)
    done = minires("prepare", "cifar10", "--from", str(source), "--data-dir", str(work),
                   "--allow-checksum-mismatch", "--no-progress")
    if done.returncode != 0:
        raise RuntimeError(f"minires prepare cifar10 exited with {done.returncode}")
    done = minires("info", str(work / "cifar10.h5"), capture_output=True, text=True)
    print(done.stdout + done.stderr, end="", flush=True)
    return info


def train_both(work: Path, epochs: int, seconds: float, device: str = "cuda") -> list:
    """Both runs at once; each gets SIGTERM when ``seconds`` are up."""
    runs, start = [], time.monotonic()
    for share in SHARES:
        run_dir = work / "runs" / f"resnet20-{share}"
        log_path = work / f"train-{share}.log"
        log = open(log_path, "w")
        cmd = [sys.executable, "-m", "minires", "train", "--dataset", "cifar10", "--data-dir",
               str(work), "--device", device, "--depth", "20", "--share", share, "--epochs",
               str(epochs), "--seed", "0", "-o", str(run_dir), "--no-progress"]
        runs.append({"share": share, "run_dir": run_dir, "log": log, "log_path": log_path,
                     "command": cmd,
                     "process": subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)})
    for run in runs:
        left = max(1.0, seconds - (time.monotonic() - start))
        try:
            run["process"].wait(timeout=left)
        except subprocess.TimeoutExpired:
            run["stopped"] = True
            run["process"].send_signal(signal.SIGTERM)  # minires keeps the finished epochs
            try:
                run["process"].wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                run["process"].kill()
                run["process"].wait()
        run["seconds"] = round(time.monotonic() - start, 1)
        run["log"].close()
    return runs


def summary(run: dict) -> dict:
    metrics_file = run["run_dir"] / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.exists() else []
    output = run["log_path"].read_text()
    return {"share": run["share"], "exit_code": run["process"].returncode,
            "stopped_at_time_limit": run.get("stopped", False), "wall_s": run["seconds"],
            "epochs_done": len(rows), "metrics": rows, "command": " ".join(run["command"]),
            "output_tail": output.splitlines()[-12:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding the archive")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=150.0,
                        help="wall-clock limit of this script, preparation included")
    parser.add_argument("--dry-run", action="store_true", help="prepare, do not train")
    parser.add_argument("--device", default="cuda", help="cpu: try this script without a GPU")
    args = parser.parse_args(argv)
    start = time.monotonic()
    archive = find_archive(args.data)
    if archive is None:
        print(f"cifar: no {OFFICIAL} or {JPEG} in {args.data}; copy one there (docs/gpu.md) "
              f"to train on real CIFAR-10", flush=True)
        return NO_ARCHIVE
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        report = {"dataset": prepare(archive, args.work), "epochs_asked": args.epochs,
                  "seconds_allowed": args.seconds}
    except Exception as exc:  # noqa: BLE001 - one line; the details are in the output above
        print(f"cifar: could not prepare {archive}: {type(exc).__name__}: {exc}", flush=True)
        return 1
    if args.dry_run:
        print(f"cifar: dry run: {archive.name} prepared into {args.work / 'cifar10.h5'}; "
              f"training needs a GPU", flush=True)
        return 0
    seconds = args.seconds - (time.monotonic() - start) - STOP_GRACE - 10
    if seconds < MIN_TRAINING:
        print(f"cifar: only {seconds:.0f} s would be left to train after preparing; not "
              f"training", flush=True)
        return NO_TIME
    runs = [summary(run) for run in train_both(args.work, args.epochs, seconds, args.device)]
    report["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for run in runs:
        last = run["metrics"][-1] if run["metrics"] else {}
        print(f"cifar: ResNet-20 share={run['share']}: {run['epochs_done']} epochs in "
              f"{run['wall_s']} s, last test error {last.get('test_error', 'n/a')}", flush=True)
    ok = all(run["epochs_done"] >= 1 for run in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
