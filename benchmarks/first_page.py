"""Time from clone to first page: what a new implementer waits for between `git clone` and the
pages answering, step by step (the README's Quick start).

    .venv/bin/python benchmarks/first_page.py                  # clone of this checkout
    .venv/bin/python benchmarks/first_page.py --source URL     # or of another repository

Steps, each timed: `git clone` into a scratch folder, `python3 -m venv .venv`, `pip install -e .`
(through whatever index or cache pip is configured with; when it fails, the script says so and
stops, e.g. an offline machine without a wheel cache), then `registry serve --demo` on a free
loopback port until `/health` answers and `/ui/` answers 200. The demo's start-up lines (data
loaded, sign-in) are printed from the server's log. A clone holds what is committed;
`--with-changes` also carries over this checkout's uncommitted changes and new files (read with
`git diff` and `git ls-files`, nothing of the checkout is changed), timed as their own step.
Nothing is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import free_port, scratch_folder

ROOT = Path(__file__).resolve().parents[1]


def run(step: str, cmd: list[str], cwd: Path, timings: list[tuple[str, float]]) -> None:
    """Run one step; stop the script with its output when it fails."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    timings.append((step, took))
    print(f"{step:<28} {took:7.1f} s", flush=True)
    if result.returncode != 0:
        print(f"  failed (exit {result.returncode}): {' '.join(cmd)}")
        print("  " + (result.stderr or result.stdout).strip()[-2000:].replace("\n", "\n  "))
        raise SystemExit(1)


def carry_changes(source: Path, folder: Path, timings: list[tuple[str, float]]) -> None:
    """The source checkout's uncommitted changes and untracked files, into the clone."""
    started = time.perf_counter()
    diff = subprocess.run(
        ["git", "-C", str(source), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=folder, input=diff, check=True)
    new = subprocess.run(
        ["git", "-C", str(source), "ls-files", "--others", "--exclude-standard", "-z"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, new):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
    took = time.perf_counter() - started
    timings.append(("uncommitted changes", took))
    print(f"{'uncommitted changes':<28} {took:7.1f} s", flush=True)


def answers(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def serve_until_first_page(folder: Path, timings: list[tuple[str, float]], limit: float) -> None:
    port = free_port()
    log = folder / "serve.log"
    registry = folder / ".venv" / "bin" / "registry"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(registry), "serve", "--demo", "--port", str(port)],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        health = None
        while time.perf_counter() - started < limit:
            if proc.poll() is not None:
                print(f"  registry serve --demo exited ({proc.returncode}):\n{log.read_text()}")
                raise SystemExit(1)
            if health is None and answers(f"http://127.0.0.1:{port}/health") == 200:
                health = time.perf_counter() - started
                timings.append(("serve --demo: /health", health))
                print(f"{'serve --demo: /health':<28} {health:7.1f} s", flush=True)
            if health is not None and answers(f"http://127.0.0.1:{port}/ui/") == 200:
                took = time.perf_counter() - started
                timings.append(("serve --demo: /ui/ 200", took))
                print(f"{'serve --demo: /ui/ 200':<28} {took:7.1f} s", flush=True)
                break
            time.sleep(0.1)
        else:
            print(f"  no first page within {limit:.0f} s:\n{log.read_text()}")
            raise SystemExit(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    said = [line for line in log.read_text().splitlines() if "demo" in line.lower()]
    for line in said:
        print(f"  server: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(ROOT), help="repository to clone (this one)")
    parser.add_argument(
        "--with-changes", action="store_true", help="also this checkout's uncommitted changes"
    )
    parser.add_argument("--python", default="python3", help="interpreter for the venv")
    parser.add_argument("--serve-limit", type=float, default=300, help="seconds to wait")
    args = parser.parse_args()
    timings: list[tuple[str, float]] = []
    with scratch_folder("first-page") as tmp:
        folder = Path(tmp) / "checkout"
        total = time.perf_counter()
        run("git clone", ["git", "clone", "--quiet", args.source, str(folder)], Path(tmp), timings)
        if args.with_changes:
            carry_changes(Path(args.source), folder, timings)
        run("python3 -m venv .venv", [args.python, "-m", "venv", ".venv"], folder, timings)
        pip = str(folder / ".venv" / "bin" / "pip")
        run("pip install -e .", [pip, "install", "--quiet", "-e", "."], folder, timings)
        serve_until_first_page(folder, timings, args.serve_limit)
        whole = time.perf_counter() - total
    print(f"{'clone to first page':<28} {whole:7.1f} s")
    steps = {name: t for name, t in timings}
    first = steps.get("serve --demo: /ui/ 200", 0.0)
    print(f"  of which: install {steps.get('pip install -e .', 0.0) / whole:.0%}, "
          f"start-up to first page {first / whole:.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
