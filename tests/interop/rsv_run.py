#!/usr/bin/env python3
"""Runs DMTF's redfish-service-validator and writes machine-readable results.

Must run with the interop venv's python (tests/interop/setup-python.sh):

    rsv_run.py --out OUTDIR -- <rf_service_validator arguments>

The validator (3.1.x) itself writes only an HTML report, an Excel report and a
debug log under `<logdir>/<YYYY-MM-DD-HHMMSS>/`. This wrapper runs the
validator's own entry point unchanged, keeps hold of its SystemUnderTest
object and writes, into OUTDIR:

  results.json   counts overall and per resource, every FAIL/WARN result
  failures.txt   normalised FAIL lines, sorted, unique: URI<TAB>PROP<TAB>KIND
  warnings.txt   the same for WARN results

Exit status: 0 the validator ran and reported no FAIL; 1 it ran and reported
at least one FAIL; 2 it could not run (service unreachable, bad arguments...).
"""

import json
import os
import re
import sys

# Value-bearing parts of validator messages, masked so that the failure kind
# does not depend on serials, ids or other values a simulator may change.
_MASKS = [
    (re.compile(r"^(Resource Error: Exception when accessing the URI) \(.*\)\.$", re.S), r"\1 (...)."),
    (re.compile(r"The identifier '.*' does not match"), "The identifier '...' does not match"),
    (re.compile(r"expected the value '.*'\.$"), "expected the value '...'."),
    (
        re.compile(r"contains '.*' which is not one of the listed allowable values\. Did you mean '.*'\?$"),
        "is not one of the listed allowable values.",
    ),
    (re.compile(r"is not one of the listed allowable values: .*\.$"), "is not one of the listed allowable values."),
    (re.compile(r"The value '.*' for the property"), "The value '...' for the property"),
    (re.compile(r"The object '\d+' contains"), "The object '*' contains"),
    # Schema versions in type names ('SoftwareInventory.v1_3_0.SoftwareInventory').
    (re.compile(r"\.v\d+_\d+_\d+\."), ".v*."),
]


def normalise_uri(uri):
    """Resource URI without query or trailing slash (/redfish/v1/ == /redfish/v1)."""
    uri = uri.split("?", 1)[0]
    return uri.rstrip("/") or "/"


def normalise_prop(prop):
    """Property path with array indices replaced by '*'; '-' for the resource itself."""
    if not prop:
        return "-"
    return re.sub(r"/\d+(?=/|$)", "/*", prop)


def normalise_kind(message):
    """Validator message with values masked (see _MASKS); whitespace collapsed."""
    message = " ".join(str(message).split())
    for pattern, repl in _MASKS:
        message = pattern.sub(repl, message)
    return message


def normalise(uri, prop, message):
    return "\t".join((normalise_uri(uri), normalise_prop(prop), normalise_kind(message)))


def main():
    argv = sys.argv[1:]
    if "--out" not in argv or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[argv.index("--out") + 1]
    rsv_args = argv[argv.index("--") + 1 :]
    os.makedirs(out, exist_ok=True)

    from redfish_service_validator import console_scripts

    captured = {}
    real_sut = console_scripts.SystemUnderTest

    def capture(*args, **kwargs):
        sut = real_sut(*args, **kwargs)
        captured["sut"] = sut
        return sut

    console_scripts.SystemUnderTest = capture
    sys.argv = ["rf_service_validator"] + rsv_args
    code = 0
    try:
        console_scripts.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    sut = captured.get("sut")
    if sut is None:
        print("rsv_run.py: the validator did not get to validate anything (exit {})".format(code), file=sys.stderr)
        return 2

    resources = {}
    failures, warnings = set(), set()
    for uri, res in sorted(sut._resources.items()):
        entry = {
            "status": res.get("StatusCode"),
            "validated": res.get("Validated"),
            "pass": res.get("Pass", 0),
            "warn": res.get("Warn", 0),
            "fail": res.get("Fail", 0),
            "skip": res.get("Skip", 0),
            "results": [],
        }
        for prop, r in res.get("Results", {}).items():
            if r["Result"] not in ("FAIL", "WARN"):
                continue
            entry["results"].append(
                {"prop": prop, "result": r["Result"], "value": r.get("Value"), "message": r.get("Message")}
            )
            line = normalise(uri, prop, r.get("Message"))
            (failures if r["Result"] == "FAIL" else warnings).add(line)
        resources[uri] = entry

    summary = {
        "tool": "redfish-service-validator " + console_scripts.tool_version,
        "args": [a for a in rsv_args],
        "validator_exit": code,
        "counts": {
            "pass": sut.pass_count,
            "warn": sut.warn_count,
            "fail": sut.fail_count,
            "skip": sut.skip_count,
            "resources": len(resources),
            "unique_failures": len(failures),
            "unique_warnings": len(warnings),
        },
        "error_classes": dict(sorted(sut._error_classes.items())),
        "warning_classes": dict(sorted(sut._warning_classes.items())),
        "resources": resources,
    }
    # Do not leak the password into results.json.
    for i, a in enumerate(summary["args"]):
        if i > 0 and summary["args"][i - 1] in ("-p", "--password"):
            summary["args"][i] = "***"
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=False)
        f.write("\n")
    for name, lines in (("failures.txt", failures), ("warnings.txt", warnings)):
        with open(os.path.join(out, name), "w") as f:
            f.writelines(line + "\n" for line in sorted(lines))
    return 1 if sut.fail_count > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
