"""Run a command and print its peak resident memory: ``python peak_rss.py COMMAND ARGS...``.

Run as a file, not imported (the package imports torch): the process that starts the command must
be small, because a child's ``ru_maxrss`` also counts the resident memory of the process it was
forked from (Linux records the old address space's peak at exec). Prints two lines after the
command's output, and exits with its exit code:

    peak_rss_kb N           wait4's ru_maxrss: the largest of the command and its waited-for children
    peak_rss_kb_at_half N   the command's own VmHWM when half its wall time had passed (read from
                            /proc every 0.2 s): equal to the peak when memory stops growing early
"""
import os
import subprocess
import sys
import threading
import time


def vm_hwm_kb(pid: int):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def main(argv):
    start = time.monotonic()
    child = subprocess.Popen(argv)
    samples, done = [], threading.Event()

    def poll():
        while not done.wait(0.2):
            kb = vm_hwm_kb(child.pid)
            if kb is not None:
                samples.append((time.monotonic() - start, kb))

    poller = threading.Thread(target=poll)
    poller.start()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    poller.join()
    half = (time.monotonic() - start) / 2
    at_half = max([kb for t, kb in samples if t <= half], default=0)
    print(f"peak_rss_kb {usage.ru_maxrss}\npeak_rss_kb_at_half {at_half}", flush=True)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
