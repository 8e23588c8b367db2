#!/usr/bin/env python3
"""Compares a normalised validator failure list with one or more baselines.

    compare_baseline.py FAILURES BASELINE [BASELINE...] [--show-fixed]

FAILURES is the failures.txt that run_validator.sh wrote; each BASELINE is a
file in the same format (validator-baseline/<dir>.txt, <dir>.trimmed.txt, or
generic.txt, which is empty). Lines are `URI<TAB>PROP<TAB>KIND`; blank lines
and lines starting with '#' are ignored. A failure is allowed when the same
line is in any BASELINE.

Exit status: 0 every failure is in a baseline; 1 some are not (listed on
stdout as `NEW<TAB>line`); 2 a file could not be read.
With --show-fixed, baseline lines not seen are listed as `FIXED<TAB>line`
(informational, never an error).
"""

import sys


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return {
            line.rstrip("\r\n").rstrip()
            for line in f
            if line.strip() and not line.lstrip().startswith("#")
        }


def main(argv):
    show_fixed = "--show-fixed" in argv
    files = [a for a in argv if a != "--show-fixed"]
    if len(files) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        failures = read_lines(files[0])
        baseline = set()
        for path in files[1:]:
            baseline |= read_lines(path)
    except OSError as e:
        print("compare_baseline.py: {}".format(e), file=sys.stderr)
        return 2

    new = sorted(failures - baseline)
    for line in new:
        print("NEW\t" + line)
    fixed = sorted(baseline - failures)
    if show_fixed:
        for line in fixed:
            print("FIXED\t" + line)
    print(
        "compare_baseline: {} failures, {} in the baseline, {} new; {} baseline entries not seen".format(
            len(failures), len(failures) - len(new), len(new), len(fixed)
        ),
        file=sys.stderr,
    )
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
