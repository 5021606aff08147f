"""Drives `glmtune serve` with the official `openai` package, unchanged: upload a file, fine-tune
the tiny model, wait for `succeeded`, chat with `fine_tuned_model`, streaming and not.

Run by server/tests/platform/openai_client.rs with OPENAI_BASE_URL, OPENAI_API_KEY and
TRAIN_FILE set. Prints one JSON line of what it saw.
"""
import json
import os
import sys
import time

import openai

client = openai.OpenAI()  # OPENAI_BASE_URL, OPENAI_API_KEY from the environment

with open(os.environ["TRAIN_FILE"], "rb") as handle:
    uploaded = client.files.create(file=handle, purpose="fine-tune")
assert uploaded.object == "file" and uploaded.purpose == "fine-tune", uploaded

job = client.fine_tuning.jobs.create(
    model="tiny",
    training_file=uploaded.id,
    hyperparameters={"n_epochs": 2, "batch_size": 2, "pre_seq_len": 4, "learning_rate": 0.02},
    seed=7,
)
deadline = time.time() + 300
while job.status not in ("succeeded", "failed", "cancelled"):
    assert time.time() < deadline, job
    time.sleep(0.2)
    job = client.fine_tuning.jobs.retrieve(job.id)
assert job.status == "succeeded", job
assert job.fine_tuned_model, job

events = client.fine_tuning.jobs.list_events(job.id, limit=100)
checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
jobs = client.fine_tuning.jobs.list()
models = [m.id for m in client.models.list()]
assert job.fine_tuned_model in models, models

answer = client.chat.completions.create(
    model=job.fine_tuned_model,
    messages=[{"role": "user", "content": "你好"}],
    max_tokens=6,
    temperature=0,
)
streamed = client.chat.completions.create(
    model=job.fine_tuned_model,
    messages=[{"role": "user", "content": "你好"}],
    max_tokens=6,
    temperature=0,
    stream=True,
)
pieces = [chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices]

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    missing = None
except openai.NotFoundError as error:
    missing = error.status_code

# The newer name of max_tokens is honoured; a parameter the server does not apply is refused.
newer = client.chat.completions.create(
    model=job.fine_tuned_model,
    messages=[{"role": "user", "content": "你好"}],
    max_completion_tokens=6,
    n=1,
    temperature=0,
)
try:
    client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "你好"}],
        presence_penalty=1.0,
    )
    refused = None
except openai.BadRequestError as error:
    refused = [error.status_code, error.body.get("message", "") if isinstance(error.body, dict) else str(error.body)]

print(json.dumps({
    "openai_version": openai.__version__,
    "job": job.id,
    "fine_tuned_model": job.fine_tuned_model,
    "events": len(events.data),
    "event_levels": sorted({e.level for e in events.data}),
    "checkpoints": [c.step_number for c in checkpoints.data],
    "jobs": [j.id for j in jobs.data],
    "answer": answer.choices[0].message.content,
    "finish_reason": answer.choices[0].finish_reason,
    "streamed": "".join(pieces),
    "missing_status": missing,
    "max_completion_tokens_answer": newer.choices[0].message.content,
    "penalty_refused": refused,
}, ensure_ascii=False))
sys.stdout.flush()
