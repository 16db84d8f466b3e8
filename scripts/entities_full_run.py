"""The measured entity runs of experiments/entities/ (issue #14): train with an entity preset
(`full`: every training document; `embedded`: the main job's small model), select on the 50 dev
documents, then score dev and test_revised.

    python scripts/entities_full_run.py ARTIFACTS [PRESET]
"""

import json
import sys

from dore.methods.entities import evaluate_entities, train_entities
from dore.presets import entity_params

artifacts = sys.argv[1] if len(sys.argv) > 1 else "runs/entities-full"
params = entity_params(sys.argv[2] if len(sys.argv) > 2 else "full", artifacts=artifacts)
print(json.dumps(train_entities(params), indent=1, default=str), flush=True)
for split in ("dev", "test"):
    record = evaluate_entities(params, split)
    print(split, json.dumps({k: record[k] for k in ("mentions", "coref", "default_coref", "docs_per_s")}), flush=True)
