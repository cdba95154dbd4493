"""Build the native EriX images and copy them into the fixtures folder.

    python3 tools/build_fixtures.py [--out DIR] [--target-dir DIR]

Runs ``cargo build --release`` in ``native/`` (whose ``.cargo/config.toml`` sets the target and the
freestanding code-generation flags; each image's ``build.rs`` adds ``linker/image.ld`` and the
image's layout), adding ``--remap-path-prefix=<native>=.`` so the bytes do not depend on where the
checkout lives. Then copies every image in IMAGES to ``DIR`` (default ``fixtures/elf/``) as
``<name>.elf`` and writes ``DIR/rustc-version.txt`` with the output of ``rustc -V``: the images
embed the compiler version, so a rebuild is byte-identical only with that same compiler.

Works from any current folder. Errors are reported as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
DEFAULT_OUT = ROOT / "fixtures" / "elf"
TARGET = "x86_64-unknown-linux-gnu"

# Cargo binary name -> fixture file name.
IMAGES = {
    "procd": "procd.elf",
    "phase0-exit": "phase0-exit.elf",
    "bench-compute": "bench-compute.elf",
    "phase0-fault-kill": "phase0-fault-kill.elf",
    "phase0-isolation-a": "phase0-isolation-a.elf",
    "phase0-isolation-b": "phase0-isolation-b.elf",
    "phase0-probe": "phase0-probe.elf",
    "phase1-lookup-client": "phase1-lookup-client.elf",
    "phase1-time-client": "phase1-time-client.elf",
    "phase2-irq-client": "phase2-irq-client.elf",
    "svc-stub": "svc-stub.elf",
    "phase1-spawner": "phase1-spawner.elf",
    "phase0-deep-fault": "phase0-deep-fault.elf",
}
# Feature variants, each its own fixture: file name -> (cargo package and binary, features).
# The default images above are built without any of these features, so they stay unchanged.
# procd's planted bugs: `emu fuzz` must find them (docs/fuzzing.md); procd-panic is also the
# crash dumps' procd (docs/dump-format.md).
VARIANTS = {
    f"procd-{bug}.elf": ("procd", (f"planted-{bug}",))
    for bug in (
        "panic",
        "length-off-by-one",
        "missing-badge-check",
        "restart-count-never-resets",
        "wider-rights",
        "generation-stuck",
    )
}
VERSION_FILE = "rustc-version.txt"

# Environment that would change the flags or the compiler invocation behind cargo's back
# (RUSTFLAGS replaces the config's flags; CARGO_INCREMENTAL=1 changes the bytes).
SCRUBBED_ENV = (
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
)


class BuildError(Exception):
    """A failure reported to the user as one line."""


def build_env() -> dict[str, str]:
    """The environment for cargo and rustc: the caller's, minus flag overrides."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV and not k.startswith("CARGO_PROFILE_")}
    env["CARGO_INCREMENTAL"] = "0"
    return env


def find_tool(env: dict[str, str], variable: str, default: str) -> str:
    """The program named by ``$variable`` (as cargo honours it), else ``default``; must exist."""
    program = env.get(variable, default)
    if shutil.which(program) is None:
        raise BuildError(f"{program} not found on PATH (needed to build the native images)")
    return program


def rustc_version(env: dict[str, str]) -> str:
    """``rustc -V`` as cargo in ``native/`` would see it (same toolchain selection)."""
    rustc = find_tool(env, "RUSTC", "rustc")
    result = subprocess.run([rustc, "-V"], cwd=NATIVE, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"`{rustc} -V` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def fixture_files() -> list[str]:
    """Every fixture file the build writes."""
    return [*IMAGES.values(), *VARIANTS, VERSION_FILE]


def cargo_build(
    target_dir: Path, env: dict[str, str], package: str | None = None, features: tuple[str, ...] = ()
) -> None:
    """Release-build every image of the workspace into ``target_dir`` (or only ``package``'s
    binaries, with ``features``)."""
    cargo = find_tool(env, "CARGO", "cargo")
    remap = f"--remap-path-prefix={NATIVE}=."
    # Appended to the rustflags of native/.cargo/config.toml (RUSTFLAGS would replace them).
    config = f"target.{TARGET}.rustflags=[{json.dumps(remap)}]"
    cmd = [
        cargo,
        "build",
        "--release",
        "--offline",
        *(["--package", package, "--features", ",".join(features)] if package else ["--workspace"]),
        "--bins",
        "--config",
        config,
        "--target-dir",
        str(target_dir),
    ]
    # Cargo only reads native/.cargo/config.toml when it runs inside native/.
    result = subprocess.run(cmd, cwd=NATIVE, env=env, check=False)
    if result.returncode != 0:
        raise BuildError(f"cargo build failed (exit {result.returncode}); see its output above")


def build(out: Path, target_dir: Path) -> list[Path]:
    """Build the images, copy them and the compiler version into ``out``; return the files."""
    env = build_env()
    find_tool(env, "CARGO", "cargo")
    version = rustc_version(env)
    cargo_build(target_dir, env)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for binary, fixture in IMAGES.items():
        src = target_dir / TARGET / "release" / binary
        if not src.is_file():
            raise BuildError(f"cargo did not produce {src}")
        dst = out / fixture
        shutil.copyfile(src, dst)
        written.append(dst)
    for fixture, (package, features) in VARIANTS.items():
        # After the default images are copied: this rebuilds the package's binary in place.
        cargo_build(target_dir, env, package, features)
        dst = out / fixture
        shutil.copyfile(target_dir / TARGET / "release" / package, dst)
        written.append(dst)
    version_file = out / VERSION_FILE
    version_file.write_text(version + "\n", encoding="utf-8")
    written.append(version_file)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the images (default: {DEFAULT_OUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--target-dir",
        type=Path,
        default=NATIVE / "target",
        help="cargo target folder (default: native/target)",
    )
    args = parser.parse_args(argv)
    try:
        written = build(args.out.resolve(), args.target_dir.resolve())
    except (BuildError, OSError) as exc:
        print(f"build_fixtures: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
