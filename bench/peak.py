"""Run a command and write its peak RSS: `python -S bench/peak.py OUT.json -- CMD ARGS...`.

A child forked from a large process inherits that process' peak in `ru_maxrss` (Linux keeps it
across `exec`), so the benchmark does not fork tools from itself: this launcher has almost no
memory of its own, and `wait4` then reports the tool's own peak. Standard library only.
"""

import json
import os
import sys


def main() -> int:
    out_path, sep, *command = sys.argv[1:]
    if sep != "--" or not command:
        print("usage: peak.py OUT.json -- CMD [ARGS...]", file=sys.stderr)
        return 2
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(out_path, "w") as handle:
        json.dump({"exit": code, "maxrss_kb": usage.ru_maxrss}, handle)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main())
