"""Start-up CPU: `registry version` and `import open_registry.core` against importing only what
they import from other packages.

Every CLI command, every `registry serve` / `registry worker` process and every import worker
process pays the package's import first. The baseline is measured in the same run: a child
process lists the modules `import open_registry.cli.main` loads that are not ours (third-party
and standard library, in the order they were loaded), and `deps` is a fresh interpreter that
imports exactly those, so it pays every dependency's own import and nothing of ours. What the
registry adds on top of that is its own modules' code (and anything they compute at import).

Each figure is the user + system CPU seconds of a child process (`os.wait4`), the median of
`--runs` runs, the commands interleaved so drifting load hits all alike. The children read
compiled bytecode, as an installed wheel's processes do: they run with `PYTHONPYCACHEPREFIX`
set to a scratch folder (filled by an untimed first run) and without `PYTHONDONTWRITEBYTECODE`,
so an editable checkout without `__pycache__` folders does not pay for compiling our modules
while the dependencies' come compiled.

- `python -S -c pass`: the interpreter alone (shown for scale);
- `deps`: `python -c "import <every module listed>"`;
- `registry version`: the console script;
- `import open_registry.core`: `python -c "import open_registry.core"`.

Prints the figures and the ratios to `deps`, never asserts them; the last line is JSON.

    .venv/bin/python benchmarks/startup.py            # 15 runs each
    .venv/bin/python benchmarks/startup.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import harness

#: prints, one a line, the modules that are not ours loaded by importing the CLI, in load order
_LIST_DEPS = """
import sys
before = set(sys.modules)
import open_registry.cli.main
for name in list(sys.modules):
    if name in before or name == "open_registry" or name.startswith("open_registry."):
        continue
    if name == "__mp_main__" or name.startswith("_virtualenv"):
        continue
    print(name)
"""

#: imports every module named in its argument (comma-separated), skipping those that refuse a
#: plain import (a few private modules only load inside their package's own import)
_IMPORT_DEPS = """
import importlib, sys
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def dependency_modules(python: str, env: dict[str, str]) -> list[str]:
    """The modules (not ours) that `import open_registry.cli.main` loads, in load order."""
    done = subprocess.run(
        [python, "-c", _LIST_DEPS],
        capture_output=True,
        text=True,
        check=True,
        cwd=harness.ROOT,
        env=env,
    )
    return [line for line in done.stdout.splitlines() if line]


def cpu_seconds(command: Sequence[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one run of `command` (output discarded)."""
    proc = subprocess.Popen(
        list(command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=harness.ROOT, env=env
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)[:120]} failed ({proc.returncode}):\n{err[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median)")
    harness.add_pin_option(parser)
    args = parser.parse_args()
    cpus = harness.pin_to_one_cpu(args)  # the children inherit the CPU

    with harness.scratch_folder("registry-startup-") as pycache:
        measure(args, cpus, pycache)


def measure(args: argparse.Namespace, cpus: str, pycache: Path) -> None:
    """Run the commands, print the figures."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    python = sys.executable
    script = shutil.which("registry", path=str(Path(python).parent))
    version = [script, "version"] if script else [python, "-m", "open_registry.cli", "version"]
    modules = dependency_modules(python, env)
    commands: dict[str, list[str]] = {
        "interpreter": [python, "-S", "-c", "pass"],
        "deps": [python, "-c", _IMPORT_DEPS, ",".join(modules)],
        "registry version": version,
        "import open_registry.core": [python, "-c", "import open_registry.core"],
    }
    load = os.getloadavg()
    print(f"{cpus}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"deps: {len(modules)} modules not ours, loaded by `import open_registry.cli.main`")
    for command in commands.values():  # warm the file system cache and .pyc files
        cpu_seconds(command, env)
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.runs):
        for label, command in commands.items():
            samples[label].append(cpu_seconds(command, env))
    ms = {label: statistics.median(values) * 1000 for label, values in samples.items()}
    print(f"\nCPU ms per process (median of {args.runs}), and the ratio to deps")
    for label, value in ms.items():
        print(f"  {label:<28} {value:>7.1f}   {harness.ratio(value, ms['deps']):.2f}x")
    print(
        f"\nregistry version: {ms['registry version'] - ms['deps']:.0f} ms of our own on top of"
        f" its dependencies' {ms['deps']:.0f} ms"
    )
    print(
        json.dumps(
            {
                "runs": args.runs,
                "modules": len(modules),
                "ms": ms,
                "ratio_to_deps": {k: harness.ratio(v, ms["deps"]) for k, v in ms.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
