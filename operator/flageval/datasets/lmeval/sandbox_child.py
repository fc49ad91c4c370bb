"""The sandbox's child: runs one program as openai/human-eval's unsafe_execute does (MIT licence,
execution.py: time_limit, swallow_io, reliability_guard) and prints `<nonce> <verdict>`.

Run as `python -I sandbox_child.py PROGRAM TIMEOUT NONCE` by sandbox.run_program, never imported.
"""

import builtins
import contextlib
import faulthandler
import io
import os
import shutil
import signal
import subprocess
import sys


class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"


@contextlib.contextmanager
def time_limit(seconds):
    def handler(signum, frame):
        raise TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def reliability_guard():
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def limit(cpu_seconds, memory_bytes, file_bytes, processes, isolate_network):
    """CPU time, address space, file size, process count; an empty network namespace where allowed."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if isolate_network:
        ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET; fails quietly without the privilege


def main():
    path, timeout, nonce = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    limit(*(int(x) for x in sys.argv[4].split(",")))
    with open(path, encoding="utf-8") as handle:
        program = handle.read()
    out = os.fdopen(os.dup(1), "w")
    del sys.argv[1:]
    reliability_guard()
    try:
        with contextlib.redirect_stdout(WriteOnlyStringIO()), contextlib.redirect_stderr(WriteOnlyStringIO()), \
                redirect_stdin(WriteOnlyStringIO()), time_limit(timeout):
            exec(program, {})  # noqa: S102 - this is the sandboxed child
        result = "passed"
    except TimeoutException:
        result = "timed out"
    except BaseException as exc:  # noqa: BLE001 - any failure of the program is its verdict
        result = f"failed: {exc}"
    out.write(f"\n{nonce} {' '.join(result.splitlines())}\n")
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
