"""The measured full entity run (issue #14): train on all training documents, select on the 50
dev documents, then score dev and test_revised. `python scripts/entities_full_run.py ARTIFACTS`."""

import json
import sys

from dore.config import EntityParams, TrainConfig
from dore.methods.entities import evaluate_entities, train_entities

artifacts = sys.argv[1] if len(sys.argv) > 1 else "runs/entities-full"
params = EntityParams(artifacts=artifacts, train=TrainConfig(
    lr=1e-4, lr_new=1e-3, epochs=2, max_steps=400, max_minutes=40.0, batch_docs=4, mixed_precision="no",
    log_every_steps=10, checkpoint_every_steps=50))
print(json.dumps(train_entities(params), indent=1, default=str), flush=True)
for split in ("dev", "test"):
    record = evaluate_entities(params, split)
    print(split, json.dumps({k: record[k] for k in ("mentions", "coref", "default_coref", "docs_per_s")}), flush=True)
