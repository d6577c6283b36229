"""The PyTorch + transformers side of benches/bart.sh and benches/bart_large.sh:
the same BART configs, batches, phases and measurements as
examples/bart_bench.rs. Prints one JSON object.

    python benches/bart_torch.py [small|large] [PHASES] [cpu|cuda] [f32|bf16|f16]

PHASES is a comma-separated subset of train,generate,ppo,io (default
train,generate)."""
import copy
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import BartConfig, BartForConditionalGeneration

SOURCE, TARGET = 512, 128
SHAPE = sys.argv[1] if len(sys.argv) > 1 else "small"
PHASES = (sys.argv[2] if len(sys.argv) > 2 else "train,generate").split(",")
DEVICE = sys.argv[3] if len(sys.argv) > 3 else "cpu"
DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[
    sys.argv[4] if len(sys.argv) > 4 else "f32"]

if SHAPE == "large":  # facebook/bart-large's shape
    BATCH, TRAIN_STEPS, WARMUP_STEPS = 2, 2, 1
    dims = dict(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12,
                encoder_attention_heads=16, decoder_attention_heads=16,
                encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024)
else:
    BATCH, TRAIN_STEPS, WARMUP_STEPS = 8, 5, 2
    dims = dict(vocab_size=8000, d_model=256, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=SOURCE)

torch.manual_seed(0)
cfg = BartConfig(**dims, dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                 decoder_start_token_id=2, forced_eos_token_id=None)
t0 = time.perf_counter()
model = BartForConditionalGeneration(cfg).to(DEVICE)
init_s = time.perf_counter() - t0
rng = random.Random(1)


def tokens(n):
    return [0] + [rng.randrange(4, cfg.vocab_size) for _ in range(n - 2)] + [2]


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


src = torch.tensor([tokens(SOURCE) for _ in range(BATCH)], device=DEVICE)
tgt = torch.tensor([tokens(TARGET) for _ in range(BATCH)], device=DEVICE)
mask = torch.ones_like(src)
autocast = torch.autocast(DEVICE, dtype=DTYPE, enabled=DTYPE != torch.float32)
out = {
    "framework": f"transformers {transformers.__version__} / torch {torch.__version__}",
    "backend": DEVICE, "shape": SHAPE, "precision": str(DTYPE).removeprefix("torch."),
    "threads": torch.get_num_threads(),
    "parameters": sum(p.numel() for p in model.parameters()),
    "init_seconds": init_s, "batch": BATCH, "source": SOURCE, "target": TARGET,
}


def train():
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-8)
    model.train()
    times = []
    for step in range(WARMUP_STEPS + TRAIN_STEPS):
        sync()
        t0 = time.perf_counter()
        with autocast:
            loss = model(input_ids=src, attention_mask=mask, labels=tgt).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        sync()
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    out.update(train_step_seconds=step_s,
               train_tokens_per_second=BATCH * (SOURCE + TARGET) / step_s,
               train_target_tokens_per_second=BATCH * TARGET / step_s,
               final_loss=loss.item())


def generation():
    model.eval()
    with torch.no_grad(), autocast:
        model.generate(input_ids=src[:1], attention_mask=mask[:1], max_new_tokens=4, do_sample=False)
        sync()
        t0 = time.perf_counter()
        res = model.generate(
            input_ids=src, attention_mask=mask, max_new_tokens=TARGET, min_new_tokens=TARGET,
            do_sample=False, num_beams=1, forced_bos_token_id=None, forced_eos_token_id=None,
        )
        sync()
        gen_s = time.perf_counter() - t0
    generated = (res.shape[1] - 1) * BATCH
    out.update(generation_seconds=gen_s, generated_tokens=generated,
               generation_tokens_per_second=generated / gen_s)


def logprobs_values(policy, value_head, dec_in, labels):
    res = policy(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in,
                 output_hidden_states=True)
    lp = torch.gather(F.log_softmax(res.logits.float(), -1), 2, labels[..., None])[..., 0]
    values = value_head(res.decoder_hidden_states[-1]).float()[..., 0] if value_head else None
    return lp, values


def ppo():
    """One PPO update as efrlhf's (and TRL's): sampled rollouts of exactly
    TARGET tokens, policy, reference and value passes, KL-shaped rewards,
    GAE, whitened advantages, one minibatch step of the clipped losses."""
    reference = copy.deepcopy(model).eval()
    value_head = torch.nn.Linear(cfg.d_model, 1).to(DEVICE)
    params = list(model.parameters()) + list(value_head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, eps=1e-8)
    sync()
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad(), autocast:
        seq = model.generate(input_ids=src, attention_mask=mask, do_sample=True, top_k=0,
                             max_new_tokens=TARGET, min_new_tokens=TARGET,
                             forced_bos_token_id=None, forced_eos_token_id=None)
        dec_in, labels = seq[:, :-1], seq[:, 1:]
        old_lp, old_values = logprobs_values(model, value_head, dec_in, labels)
        ref_lp, _ = logprobs_values(reference, None, dec_in, labels)
    score = torch.full((BATCH,), labels.shape[1] / TARGET, device=DEVICE)
    rewards = -0.05 * (old_lp - ref_lp)
    rewards[:, -1] += score
    adv = torch.zeros_like(rewards)
    last = torch.zeros(BATCH, device=DEVICE)
    for t in reversed(range(rewards.shape[1])):
        nxt = old_values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros(BATCH, device=DEVICE)
        delta = rewards[:, t] + nxt - old_values[:, t]
        last = delta + 0.95 * last
        adv[:, t] = last
    returns = adv + old_values
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    model.train()
    with autocast:
        lp, values = logprobs_values(model, value_head, dec_in, labels)
    ratio = torch.exp(lp - old_lp)
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
    vclip = old_values + (values - old_values).clamp(-0.2, 0.2)
    vf = 0.5 * torch.max((values - returns) ** 2, (vclip - returns) ** 2).mean()
    (pg + 0.1 * vf).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()
    sync()
    out.update(ppo_update_seconds=time.perf_counter() - t0,
               ppo_response_length=float(labels.shape[1]))


def save_and_load():
    folder = tempfile.mkdtemp(prefix="bart-bench-torch-")
    t0 = time.perf_counter()
    model.save_pretrained(folder, safe_serialization=True)
    save_s = time.perf_counter() - t0
    size = os.path.getsize(os.path.join(folder, "model.safetensors"))
    t0 = time.perf_counter()
    BartForConditionalGeneration.from_pretrained(folder).to(DEVICE)
    load_s = time.perf_counter() - t0
    shutil.rmtree(folder)
    out.update(save_seconds=save_s, load_seconds=load_s, safetensors_bytes=size)


for phase in PHASES:
    {"train": train, "generate": generation, "ppo": ppo, "io": save_and_load}[phase]()
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if DEVICE == "cuda":
    out["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps(out))
