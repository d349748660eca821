"""Drives `npm login --auth-type=legacy` through a pseudo-terminal (npm only
reads its Username/Password prompts from a TTY) and answers the prompts.

Usage: npm_login.py REGISTRY USERCONFIG USERNAME PASSWORD
Prints everything npm wrote; exits with npm's exit code.
"""
import os
import pty
import select
import sys
import time

registry, userconfig, username, password = sys.argv[1:5]
pid, fd = pty.fork()
if pid == 0:
    cache = os.path.join(os.path.dirname(userconfig), "cache")
    os.execvp("npm", ["npm", "login", "--auth-type=legacy", "--registry", registry,
                      "--userconfig", userconfig, "--cache", cache])

output = b""


def read_until(marker, timeout=20.0):
    global output
    deadline = time.time() + timeout
    while marker not in output:
        if time.time() > deadline:
            return False
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return False
            if not chunk:
                return False
            output += chunk
    return True


if read_until(b"Username:"):
    os.write(fd, username.encode() + b"\r")
    if read_until(b"Password:"):
        os.write(fd, password.encode() + b"\r")
read_until(b"\x00EOF-never\x00", timeout=20.0)  # drain until npm exits
os.kill(pid, 9)  # a zombie ignores it; a hung npm is stopped
_, status = os.waitpid(pid, 0)
print(output.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
