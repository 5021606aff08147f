#!/usr/bin/env python3
"""What only a GPU can show, in one run (python3, standard library only); see scripts/gpu-check.sh.

1. logits: `glmtune logits --device cuda` against `--device cpu` on the fixtures, in f32, bf16 and
   f16 (each against the CPU at the same dtype): the largest difference over the largest CPU logit,
   within 1e-4 for f32 and 2e-2 for bf16/f16.
2. train: 20 steps of the fixture's recipe on CUDA and on the CPU; the largest relative difference
   of a step's loss (trainer_log.jsonl), within 1e-3 for f32 (twenty steps of a GPU's other
   summation order) and 2e-2 for bf16.
3. bench: `glmtune bench train` at ChatGLM-6B's shape for fp16, bf16 and int4, with and without
   gradient checkpointing; a run that fails (an unknown flag, out of memory, a timeout) is a row
   with its error, not the end of the script.

Prints one table. Exit status 1 when a comparison is out of bounds or failed, else 0 (bench rows
are measurements: they never fail the check).
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TEXT = "高血压患者平时应该注意什么？请详细回答。"

# (name, model folder, adapter folder or None)
LOGIT_CASES = [
    ("chatglm6b-tiny", FIXTURES / "chatglm6b-tiny" / "model", None),
    ("chatglm6b-tiny+adapter", FIXTURES / "chatglm6b-tiny" / "model",
     FIXTURES / "chatglm6b-tiny" / "adapter_trained"),
    ("chatglm3-tiny", FIXTURES / "chatglm3-tiny" / "model", None),
    ("chatglm3-tiny+adapter", FIXTURES / "chatglm3-tiny" / "model",
     FIXTURES / "chatglm3-tiny" / "adapter_init"),
]
LOGIT_BOUND = {"f32": 1e-4, "bf16": 2e-2, "f16": 2e-2}
TRAIN_BOUND = {"f32": 1e-3, "bf16": 2e-2}
TRAIN_STEPS = 20

# (case, flags): the official recipe's shape, with each precision and memory option.
BENCH_CASES = [
    ("fp16", ["--fp16"]),
    ("fp16 ckpt", ["--fp16", "--gradient-checkpointing"]),
    ("bf16", ["--bf16"]),
    ("bf16 ckpt", ["--bf16", "--gradient-checkpointing"]),
    ("int4 fp16", ["--fp16", "--quantization-bit", "4"]),
    ("int4 fp16 ckpt", ["--fp16", "--quantization-bit", "4", "--gradient-checkpointing"]),
]


class Table:
    def __init__(self):
        self.rows = []
        self.failed = False

    def add(self, check, case, result, bound, status):
        if status == "FAIL":
            self.failed = True
        self.rows.append((check, case, result, bound, status))

    def print(self, title):
        header = ("check", "case", "result", "bound", "status")
        widths = [max(len(str(r[i])) for r in self.rows + [header]) for i in range(5)]
        line = "+".join("-" * (w + 2) for w in widths)
        print(title)
        print(line)
        print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
        print(line)
        for row in self.rows:
            print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        print(line)
        sys.stdout.flush()


def run(binary, args, timeout):
    """Runs glmtune; returns (ok, stdout, one-line error)."""
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "", f"timeout after {timeout} s"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit {done.returncode}"
        return False, done.stdout, f"exit {done.returncode}: {last}"
    return True, done.stdout, ""


def read_logits(path):
    """The f32 tensor `logits` of a safetensors file, flat."""
    with open(path, "rb") as file:
        (header_len,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_len))
        info = header["logits"]
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: logits are {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        file.seek(8 + header_len + start)
        values = array("f")
        values.frombytes(file.read(end - start))
    if sys.byteorder != "little":
        values.byteswap()
    return values


def relative_difference(actual, reference):
    if len(actual) != len(reference):
        raise ValueError(f"{len(actual)} logits against {len(reference)}")
    scale = max(abs(v) for v in reference) or 1.0
    return max(abs(a - r) for a, r in zip(actual, reference)) / scale


def check_logits(table, binary, device, reference_device, work):
    for name, model, adapter in LOGIT_CASES:
        ok, out, error = run(binary, ["encode", "--model", str(model), TEXT], 60)
        if not ok:
            table.add("logits", name, error, "", "FAIL")
            continue
        ids = ",".join(str(i) for i in json.loads(out)["ids"])
        for dtype, bound in LOGIT_BOUND.items():
            files = {}
            for role, dev in (("test", device), ("reference", reference_device)):
                path = work / f"logits-{name}-{dtype}-{role}.safetensors"
                args = ["logits", "--model", str(model), "--ids", ids, "--out", str(path),
                        "--dtype", dtype, "--device", dev]
                if adapter is not None:
                    args += ["--adapter", str(adapter)]
                ok, _, error = run(binary, args, 120)
                if not ok:
                    files = None
                    table.add("logits", f"{name} {dtype}", f"{dev}: {error}", "", "FAIL")
                    break
                files[role] = path
            if files is None:
                continue
            diff = relative_difference(read_logits(files["test"]), read_logits(files["reference"]))
            table.add("logits", f"{name} {dtype}", f"{diff:.2e} of max |logit|",
                      f"< {bound:g}", "ok" if diff < bound else "FAIL")


def train_args(output_dir, dtype, device):
    # The recipe of server/tests/train.rs (expected.json → train), run for 20 steps.
    fixture = FIXTURES / "chatglm6b-tiny"
    return ["train", "--model", str(fixture / "model"), "--train-file", str(fixture / "train.jsonl"),
            "--init-adapter", str(fixture / "adapter_init"), "--prefix-dropout", "0",
            "--no-shuffle", "--logging-steps", "1", "--max-source-length", "24",
            "--max-target-length", "16", "--per-device-train-batch-size", "2",
            "--gradient-accumulation-steps", "1", "--learning-rate", "0.02",
            "--max-steps", str(TRAIN_STEPS), "--save-steps", "1000000", "--dtype", dtype,
            "--device", device, "--output-dir", str(output_dir)]


def losses(output_dir):
    rows = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()
            if line.strip()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row and "step" in row}


def check_training(table, binary, device, reference_device, work):
    for dtype, bound in TRAIN_BOUND.items():
        runs = {}
        for role, dev in (("test", device), ("reference", reference_device)):
            out = work / f"train-{dtype}-{role}"
            ok, _, error = run(binary, train_args(out, dtype, dev), 300)
            if not ok:
                table.add("train", f"chatglm6b-tiny {dtype}", f"{dev}: {error}", "", "FAIL")
                runs = None
                break
            runs[role] = losses(out)
        if runs is None:
            continue
        actual, reference = runs["test"], runs["reference"]
        if sorted(actual) != sorted(reference) or len(reference) != TRAIN_STEPS:
            table.add("train", f"chatglm6b-tiny {dtype}",
                      f"logged steps differ: {len(actual)} vs {len(reference)}", "", "FAIL")
            continue
        diff = max(abs(actual[s] - reference[s]) / abs(reference[s]) for s in reference)
        table.add("train", f"chatglm6b-tiny {dtype}",
                  f"{diff:.2e} max rel. loss diff over {TRAIN_STEPS} steps "
                  f"(last loss {reference[max(reference)]:.4f})",
                  f"< {bound:g}", "ok" if diff < bound else "FAIL")


def check_bench(table, binary, device, config, steps, timeout, deadline):
    for index, (case, flags) in enumerate(BENCH_CASES):
        # The whole script must end within its budget (8 minutes on the card): what is left is
        # shared among the runs still to come.
        left = (deadline - time.monotonic()) / (len(BENCH_CASES) - index)
        run_timeout = int(min(timeout, left))
        if run_timeout < 10:
            table.add("bench", f"{config} {case}", "skipped: out of time", "", "error")
            continue
        args = ["bench", "train", "--config", config, "--random-weights", "--pre-seq-len", "128",
                "--max-source-length", "64", "--max-target-length", "64",
                "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "16",
                *flags, "--device", device, "--steps", str(steps)]
        started = time.monotonic()
        ok, out, error = run(binary, args, run_timeout)
        wall = time.monotonic() - started
        if not ok:
            table.add("bench", f"{config} {case}", error, "", "error")
            continue
        try:
            result = json.loads(out.strip().splitlines()[-1])
            peak = result["peak_memory_bytes"] / 2**30
            text = (f"{result['tokens_per_second']:.0f} tok/s, {result['seconds_per_step']:.2f} s/step, "
                    f"peak {peak:.2f} GiB, {result['device']} {result['dtype']}, wall {wall:.0f} s")
        except (ValueError, KeyError, IndexError, TypeError) as error_text:
            table.add("bench", f"{config} {case}", f"unreadable output: {error_text}", "", "error")
            continue
        table.add("bench", f"{config} {case}", text, "", "measured")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True, help="the glmtune binary (built with scripts/build-cuda.sh)")
    parser.add_argument("--device", default="cuda",
                        help="the device under test (cuda, cuda:N; cpu = a dry run, cpu against cpu)")
    parser.add_argument("--bench-config", default=None,
                        help="bench train --config (default chatglm-6b on a GPU; no bench on cpu)")
    parser.add_argument("--bench-steps", type=int, default=3)
    parser.add_argument("--bench-timeout", type=int, default=90, help="seconds per bench run at most")
    parser.add_argument("--budget", type=int, default=450,
                        help="seconds for the whole check; the bench runs share what is left")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()

    binary = shutil.which(args.bin) or args.bin
    bench_config = args.bench_config or (None if args.device == "cpu" else "chatglm-6b")
    table = Table()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="glmtune-gpu-check-") as work:
        work = Path(work)
        check_logits(table, binary, args.device, "cpu", work)
        check_training(table, binary, args.device, "cpu", work)
        if not args.skip_bench and bench_config is not None:
            check_bench(table, binary, args.device, bench_config, args.bench_steps,
                        args.bench_timeout, started + args.budget)
    table.print(f"glmtune gpu-check: --device {args.device} against the cpu "
                f"({time.monotonic() - started:.0f} s, {os.path.basename(binary)})")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
