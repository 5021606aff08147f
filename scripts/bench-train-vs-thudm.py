#!/usr/bin/env python3
"""CPU P-Tuning v2 training speed: THUDM's own code against `glmtune bench train`, same shape, same
settings, in one script, so both see the same machine. Prints both rates, both peak memories and the
ratio. A benchmark, not a test: run it when the machine is otherwise idle.

THUDM's side is the official stack: ChatGLM-6B's `modeling_chatglm.py` (a model of the given shape with
random weights, f32 on CPU, pre_seq_len set so only the prefix trains) driven by the Seq2SeqTrainer that
`THUDM/ChatGLM-6B` vendors in `ptuning/` (adamw_hf, batch × accumulation as given, the official
lengths). No THUDM code is in this repository: pass the folders holding their files.

    python3 scripts/bench-train-vs-thudm.py --model-code-dir CHATGLM_6B_MODEL_REPO \\
        --ptuning-dir CHATGLM_6B_REPO/ptuning --glmtune target/release/glmtune \\
        [--shape h1024l12] [--pre-seq-len 32] [--batch 1] [--accumulation 4] [--steps 3] \\
        [--forward-batch-size 4]

Needs torch and the transformers version THUDM's ptuning pins (4.27.1) on PYTHONPATH.
"""
import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
import types


def shape_config(cfg_mod, shape):
    """The config `glmtune bench train --config hHlL` builds (engine/src/config/shapes.rs)."""
    hidden, layers = (int(x) for x in shape[1:].split("l"))
    return cfg_mod.ChatGLMConfig(
        vocab_size=130528, hidden_size=hidden, num_layers=layers, num_attention_heads=hidden // 128,
        inner_hidden_size=4 * hidden, layernorm_epsilon=1e-5, max_sequence_length=2048,
        bos_token_id=130004, eos_token_id=130005, mask_token_id=130000, gmask_token_id=130001,
        pad_token_id=3, position_encoding_2d=True, use_cache=False)


def example(config, source, target, seed):
    """bench.rs's example: source prompt tokens ending in [gMASK] sop, target answer tokens."""
    ordinary = lambda i, stride: 1000 + (i * stride + seed * 131) % 20000
    ids = [ordinary(i, 7) for i in range(source - 2)] + [config.gmask_token_id, config.bos_token_id]
    context = len(ids)
    ids += [ordinary(i, 13) for i in range(target - 1)] + [config.eos_token_id]
    return dict(input_ids=ids, labels=[-100] * context + ids[context:])


def thudm(a):
    import torch
    pkg = types.ModuleType("thudm_chatglm6b")
    pkg.__path__ = [os.path.abspath(a.model_code_dir)]
    sys.modules["thudm_chatglm6b"] = pkg
    cfg_mod = importlib.import_module("thudm_chatglm6b.configuration_chatglm")
    mdl_mod = importlib.import_module("thudm_chatglm6b.modeling_chatglm")
    sys.path.insert(0, os.path.abspath(a.ptuning_dir))
    from trainer_seq2seq import Seq2SeqTrainer
    from transformers import Seq2SeqTrainingArguments, default_data_collator

    torch.manual_seed(0)
    config = shape_config(cfg_mod, a.shape)
    config.pre_seq_len = a.pre_seq_len
    config.prefix_projection = False
    model = mdl_mod.ChatGLMForConditionalGeneration(config, empty_init=False).float()
    model.lm_head.weight.requires_grad_(False)
    batch = a.batch * a.accumulation
    data = [example(config, a.source, a.target, i) for i in range(batch)]
    args = Seq2SeqTrainingArguments(
        output_dir="/tmp/glmtune-bench-thudm", per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=a.accumulation, learning_rate=2e-2, max_steps=a.steps,
        optim="adamw_hf", logging_steps=1, save_strategy="no", report_to=[], no_cuda=True,
        disable_tqdm=True)
    times = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            times[-1] = time.perf_counter() - times[-1]

    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator,
                    callbacks=[Clock()], save_prefixencoder=True)
    trainer.train()
    timed = times[1:] if len(times) > 1 else times
    tokens = batch * (a.source + a.target)
    return dict(tokens_per_second=tokens * len(timed) / sum(timed), seconds_per_step=sum(timed) / len(timed),
                peak_memory_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                torch=torch.__version__, threads=torch.get_num_threads())


def glmtune(a):
    command = [a.glmtune, "bench", "train", "--config", a.shape, "--random-weights",
               "--pre-seq-len", str(a.pre_seq_len), "--max-source-length", str(a.source),
               "--max-target-length", str(a.target), "--per-device-train-batch-size", str(a.batch),
               "--gradient-accumulation-steps", str(a.accumulation), "--steps", str(a.steps)]
    if a.forward_batch_size:
        command += ["--forward-batch-size", str(a.forward_batch_size)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-code-dir", required=True)
    ap.add_argument("--ptuning-dir", required=True)
    ap.add_argument("--glmtune", required=True)
    ap.add_argument("--shape", default="h1024l12")
    ap.add_argument("--pre-seq-len", type=int, default=32)
    ap.add_argument("--source", type=int, default=64)
    ap.add_argument("--target", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--accumulation", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--forward-batch-size", type=int, default=0)
    a = ap.parse_args()
    # glmtune first, in its own process, so THUDM's peak memory is this process's alone.
    ours = glmtune(a)
    theirs = thudm(a)
    print(json.dumps(dict(settings=vars(a), glmtune=ours, thudm=theirs,
                          ratio_tokens_per_second=ours["tokens_per_second"] / theirs["tokens_per_second"],
                          ratio_peak_memory=ours["peak_memory_bytes"] / theirs["peak_memory_bytes"]),
                     indent=1))


if __name__ == "__main__":
    main()
