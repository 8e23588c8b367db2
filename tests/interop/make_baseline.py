#!/usr/bin/env python3
"""Writes the validator baseline of one mockup from a run_validator.sh OUTDIR.

    make_baseline.py OUTDIR BASELINE_DIR NAME

Splits OUTDIR/failures.txt into
  BASELINE_DIR/NAME.txt          failures the mockup's payloads themselves cause
  BASELINE_DIR/NAME.trimmed.txt  HTTP 404s: links to resources that were
                                 dropped when the vendor crawl was trimmed
each with a header of counts from OUTDIR/results.json.
"""

import json
import os
import sys

TRIMMED_KIND = "Resource Error: Received HTTP 404 when accessing the URI."


def kinds(lines):
    """'Category=count, ...' of the KIND column's text before the first ':'."""
    counts = {}
    for line in lines:
        kind = line.split("\t")[2].split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join("{}={}".format(k, v) for k, v in sorted(counts.items()))


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, base_dir, name = argv
    with open(os.path.join(out, "results.json")) as f:
        counts = json.load(f)["counts"]
    with open(os.path.join(out, "failures.txt")) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    trimmed = [line for line in lines if line.split("\t")[2] == TRIMMED_KIND]
    other = [line for line in lines if line.split("\t")[2] != TRIMMED_KIND]
    head = [
        "# redfish-service-validator 3.1.8, offline, against tests/interop/serve_mockup.py redfish-mockups/{}".format(
            name
        ),
        "# resources={resources} pass={pass} warn={warn} fail={fail} unique_failures={unique_failures}".format(
            **counts
        )
        + " (payload: {}, trimming: {})".format(len(other), len(trimmed)),
        "# payload failure kinds: " + (kinds(other) or "none"),
        "# URI<TAB>PROP<TAB>KIND; PROP '-' is the resource itself; array indices are '*'.",
        "# Regenerate: tests/interop/check_mockups.sh --update",
    ]
    os.makedirs(base_dir, exist_ok=True)
    for suffix, body, note in (
        (".txt", other, "# Failures caused by the mockup's own payloads."),
        (".trimmed.txt", trimmed, "# HTTP 404s: links to resources dropped when the crawl was trimmed."),
    ):
        with open(os.path.join(base_dir, name + suffix), "w") as f:
            f.write("\n".join(head + [note] + body) + "\n")
    print("{}: {} payload failures, {} from trimming".format(name, len(other), len(trimmed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
