"""A process that imports gapkit once and forks one ``gapkit`` CLI process per request, so that the kill
test can start (and SIGKILL) many real runs without paying the import time of torch and transformers
each time. It never computes anything itself, so its children fork from a process with no thread pool.

Protocol (one JSON object a line): in ``{"args": [...], "env": {...}, "log": path}``; out
``{"pid": N}`` once the child runs, then ``{"rc": R}`` when it ends (R < 0: killed by signal -R).
"""

import json
import os
import sys
import traceback

import gapkit.cli
import gapkit.distill.trainer  # noqa: F401  (the heavy imports, done once)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.environ.clear()
            os.environ.update(request["env"])
            fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            try:
                rc = gapkit.cli.main(request["args"])
            except SystemExit as exit_:
                rc = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 - report any crash as a failed run
                traceback.print_exc()
                rc = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc or 0)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"rc": rc}), flush=True)


if __name__ == "__main__":
    main()
