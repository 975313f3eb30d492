# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""Child processes of the bench (started pinned, stopped by PID) and what /proc says of them."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class Children:
    """Every process the bench starts. `stop_all` ends each one by its PID, newest first."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, core, log_path, cwd=None):
        log = open(log_path, "wb")
        # taskset pins before exec, so the child never runs on the other core.
        proc = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
        log.close()
        proc.bench_name = name
        self.procs.append(proc)
        return proc

    def stop(self, proc, grace=5.0):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def free_port():
    """A port the kernel says is free now. Ports are picked, then bound by the child soon after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, deadline_s, proc=None, host=None):
    """Waits until `url` answers 200, or raises naming the URL; fails fast if `proc` died."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with status {proc.returncode} before {url} answered; see its log")
        try:
            req = urllib.request.Request(url, headers={"host": host} if host else {})
            with urllib.request.urlopen(req, timeout=1) as resp:
                if resp.status == 200:
                    resp.read()
                    return
                last = f"status {resp.status}"
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {deadline_s}s (last: {last})")


def cpu_seconds(pid):
    """utime + stime of the whole process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def rss_mib(pid):
    """Resident set size now, from /proc/PID/statm (resident pages), in MiB."""
    with open(f"/proc/{pid}/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * PAGE_KIB / 1024
