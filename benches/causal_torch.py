"""The PyTorch + transformers side of benches/causal.sh: the same shapes,
batches and measurements as examples/causal_bench.rs. Prints one JSON object.

    python benches/causal_torch.py [qwen2.5-0.5b|tiny] [train|generate] [cpu|cuda]
"""
import json
import resource
import sys
import time

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

BATCH, PROMPT, COMPLETION, GEN_PROMPT, NEW_TOKENS = 2, 384, 128, 512, 128
SHAPE = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-0.5b"
PHASE = sys.argv[2] if len(sys.argv) > 2 else "train"
DEVICE = sys.argv[3] if len(sys.argv) > 3 else "cpu"

if SHAPE == "tiny":
    dims = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2)
else:  # Qwen/Qwen2.5-0.5B's shape
    dims = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2)
pad = 151643 % dims["vocab_size"]
config = Qwen2Config(tie_word_embeddings=True, max_position_embeddings=32768,
                     pad_token_id=pad, eos_token_id=pad, **dims)
torch.manual_seed(0)
t0 = time.perf_counter()
model = Qwen2ForCausalLM(config).to(DEVICE)
out = {"framework": f"pytorch {torch.__version__} + transformers {transformers.__version__}",
       "device": DEVICE, "shape": SHAPE, "threads": torch.get_num_threads(),
       "parameters": sum(p.numel() for p in model.parameters()),
       "init_seconds": time.perf_counter() - t0}
g = torch.Generator().manual_seed(1)


def rand(n):
    return torch.randint(0, dims["vocab_size"] - 1, (BATCH, n), generator=g).to(DEVICE)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


if PHASE == "train":
    model.train()
    ids = torch.cat([rand(PROMPT), rand(COMPLETION)], 1)
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, eps=1e-8)
    times = []
    for step in range(3):
        sync()
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        sync()
        if step > 0:
            times.append(time.perf_counter() - t)
    step = sum(times) / len(times)
    out["train_step_seconds"] = step
    out["train_tokens_per_second"] = BATCH * (PROMPT + COMPLETION) / step
    out["final_loss"] = loss.item()
else:
    model.eval()
    ids = rand(GEN_PROMPT)
    with torch.no_grad():
        sync()
        t = time.perf_counter()
        got = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=pad)
        sync()
        secs = time.perf_counter() - t
    assert got.shape[1] == GEN_PROMPT + NEW_TOKENS
    out["generation_seconds"] = secs
    out["generation_tokens_per_second"] = BATCH * NEW_TOKENS / secs
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
