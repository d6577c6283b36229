"""Example external stage: upper-cases its inputs' text.

The runner sets EFRLHF_STAGE to a JSON file:
{"stage", "kind", "params", "inputs": [{"stage", "path"}], "output", "seed", ...}
Write results into `output`; an optional metrics.json holds a flat object of numbers.
"""
import json
import os

spec = json.load(open(os.environ["EFRLHF_STAGE"]))
params = spec["params"]

parts = []
for inp in spec["inputs"]:
    with open(os.path.join(inp["path"], "text.txt")) as f:
        parts.append(f.read())
text = " ".join(parts) if parts else "hello from efrlhf"
shouted = " ".join([text.upper()] * params["times"])

with open(os.path.join(spec["output"], "text.txt"), "w") as f:
    f.write(shouted)
with open(os.path.join(spec["output"], "metrics.json"), "w") as f:
    json.dump({"chars": len(shouted), "times": params["times"]}, f)
print(f"{spec['stage']}: wrote {len(shouted)} characters")
