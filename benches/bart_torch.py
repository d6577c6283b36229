"""The PyTorch + transformers side of benches/bart.sh: the same BART config,
batch and measurements as examples/bart_bench.rs. Prints one JSON object."""
import json
import random
import resource
import time

import torch
import transformers
from transformers import BartConfig, BartForConditionalGeneration

BATCH, SOURCE, TARGET = 8, 512, 128
TRAIN_STEPS, WARMUP_STEPS = 5, 2

torch.manual_seed(0)
cfg = BartConfig(
    vocab_size=8000, d_model=256, encoder_layers=2, decoder_layers=2,
    encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=SOURCE,
    dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    forced_eos_token_id=None,
)
model = BartForConditionalGeneration(cfg)
rng = random.Random(1)


def tokens(n):
    return [0] + [rng.randrange(4, cfg.vocab_size) for _ in range(n - 2)] + [2]


src = torch.tensor([tokens(SOURCE) for _ in range(BATCH)])
tgt = torch.tensor([tokens(TARGET) for _ in range(BATCH)])
mask = torch.ones_like(src)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-8)
model.train()
times = []
for step in range(WARMUP_STEPS + TRAIN_STEPS):
    t0 = time.perf_counter()
    loss = model(input_ids=src, attention_mask=mask, labels=tgt).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    if step >= WARMUP_STEPS:
        times.append(time.perf_counter() - t0)
step_s = sum(times) / len(times)

model.eval()
with torch.no_grad():
    model.generate(input_ids=src[:1], attention_mask=mask[:1], max_new_tokens=4, do_sample=False)
    t0 = time.perf_counter()
    out = model.generate(
        input_ids=src, attention_mask=mask, max_new_tokens=TARGET, min_new_tokens=TARGET,
        do_sample=False, num_beams=1, forced_bos_token_id=None, forced_eos_token_id=None,
    )
    gen_s = time.perf_counter() - t0
generated = (out.shape[1] - 1) * BATCH
print(json.dumps({
    "framework": f"transformers {transformers.__version__} / torch {torch.__version__}",
    "backend": "cpu",
    "threads": torch.get_num_threads(),
    "parameters": sum(p.numel() for p in model.parameters()) - 0,
    "batch": BATCH, "source": SOURCE, "target": TARGET,
    "train_step_seconds": step_s,
    "train_tokens_per_second": BATCH * (SOURCE + TARGET) / step_s,
    "train_target_tokens_per_second": BATCH * TARGET / step_s,
    "generation_seconds": gen_s,
    "generated_tokens": generated,
    "generation_tokens_per_second": generated / gen_s,
    "final_loss": loss.item(),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
