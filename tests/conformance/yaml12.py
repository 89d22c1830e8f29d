"""The oracle: each YAML file named on the command line read by ruamel.yaml
(YAML 1.2 by default, pure Python), printed as one JSON line per file:
{"file": ..., "json": ...} or {"file": ..., "error": ...}. Non-finite floats
are reported as an error, as JSON cannot carry them."""
import json
import math
import sys

from ruamel.yaml import YAML


def check(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite float")
    if isinstance(value, dict):
        for v in value.values():
            check(v)
    if isinstance(value, list):
        for v in value:
            check(v)


for path in sys.argv[1:]:
    yaml = YAML(typ="safe", pure=True)
    try:
        with open(path, encoding="utf-8") as f:
            value = yaml.load(f)
        check(value)
        out = {"file": path, "json": json.loads(json.dumps(value, default=str))}
    except Exception as e:  # noqa: BLE001 - any refusal is an answer
        out = {"file": path, "error": type(e).__name__}
    print(json.dumps(out))
