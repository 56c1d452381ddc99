"""``make bench`` (health part): the prober's CPU use with 500 checks at a 5-second interval.

A local service (its own process, so its CPU is not counted) answers 500 health URLs on
127.0.0.1 with a JSON body carrying a version. ``andon watch`` (the headless prober that
holds every environment's lease) runs against a configuration of 500 checks over five
environments for ``--seconds``; its CPU time (user + system, from the kernel's rusage
when it exits) divided by the wall time it ran is its share of one core. Target: under
10 %. Start-up (imports, opening the log) is included, so the figure errs high.

Run alone: ``python -m benchmarks.health [--checks 500] [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.generate import andon_bin, isolated_env

CPU_TARGET = 0.10  # of one core
ENVIRONMENTS = 5

SERVER = textwrap.dedent('''
    import asyncio, sys

    BODY = b'{"build": {"sha": "0000000000000000000000000000000000000000"}, "ok": true}'
    RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
                + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)

    DOWN = (b"HTTP/1.1 503 Service Unavailable\\r\\nContent-Length: 0\\r\\n\\r\\n")
    FLAG = sys.argv[1] if len(sys.argv) > 1 else None

    async def serve(reader, writer):
        import os
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                if not head:
                    break
                down = FLAG and b" /healthz/0/" in head and os.path.exists(FLAG)
                writer.write(DOWN if down else RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
''')


def _config(port: int, checks: int, interval: float) -> str:
    lines = []
    per_env = max(1, checks // ENVIRONMENTS)
    for env in range(ENVIRONMENTS):
        lines.append(f"[environments.env{env}]")
        for n in range(per_env):
            lines += [
                f"[[environments.env{env}.health]]",
                f'name = "check{n}"',
                f'url = "http://127.0.0.1:{port}/healthz/{env}/{n}"',
                f"interval = {interval}",
                "timeout = 2",
                'version = "build.sha"',
            ]
    return "\n".join(lines) + "\n"


def measure(checks: int = 500, seconds: float = 30.0, interval: float = 5.0) -> tuple[float, float, int]:
    """(CPU share of one core, wall seconds, samples written) of ``andon watch`` over ``checks``."""
    with tempfile.TemporaryDirectory(prefix="andon-bench-health-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        repo.mkdir()
        env = isolated_env()
        subprocess.run(["git", "init", "--quiet", str(repo)], check=True, env=env)
        server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            (repo / "andon.toml").write_text(_config(port, checks, interval))
            db = root / "deploys.db"
            started = time.perf_counter()
            watch = subprocess.Popen([str(andon_bin()), "watch", "--repo", str(repo), "--db", str(db)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(seconds)
            watch.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(watch.pid, 0)
            wall = time.perf_counter() - started
            if os.waitstatus_to_exitcode(status) != 0:
                error = watch.stderr.read().decode(errors="replace").strip() if watch.stderr else ""
                raise SystemExit(f"benchmarks: andon watch failed: {error.splitlines()[-1:] or status}")
        finally:
            server.kill()
            server.wait()
        import sqlite3

        with sqlite3.connect(db) as conn:
            samples = conn.execute("SELECT count(*) FROM health_samples").fetchone()[0]
        return (usage.ru_utime + usage.ru_stime) / wall, wall, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.health", description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    share, wall, samples = measure(args.checks, args.seconds, args.interval)
    rounds = samples / max(1, args.checks)
    verdict = "PASS" if share < CPU_TARGET else "FAIL"
    print(f"prober CPU, andon watch over {args.checks} checks every {args.interval:g}s for {wall:.0f}s "
          f"({samples:,} samples, {rounds:.1f} rounds): {share:.1%} of one core "
          f"(target < {CPU_TARGET:.0%})  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
