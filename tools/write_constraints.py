"""Write constraints.txt from a `pip install --dry-run --report` JSON (used by `make lock`)."""

import json
import sys

report, out = sys.argv[1], sys.argv[2]
rows = sorted(
    (i["metadata"]["name"].lower(), i["metadata"]["version"])
    for i in json.load(open(report))["install"]
    if i["metadata"]["name"] != "kws"
)
header = (
    "# Full resolved set for Python 3.11 (pip install -c constraints.txt -e .[cpu,dev,voices]).\n"
    "# Regenerate: make lock\n"
)
with open(out, "w") as f:
    f.write(header + "".join(f"{n}=={v}\n" for n, v in rows))
