"""Build of the optional C fast path `protocols._fast` (issue 8); the project metadata lives in pyproject.toml.

The extension is `optional=True`: without a compiler or without the Python headers the install goes on with
the pure-Python codec (protocols.fast.backend() == "python"). OpenSSL's libcrypto is linked only when its
headers are found; without them the module is built without its crypto part (no GBCS_FAST_CRYPTO).
A marker file `protocols/_fast_expected` is written beside the built module, so that a later import failure
warns instead of silently running the slow path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _openssl_include() -> list[str] | None:
    """Include dirs holding openssl/evp.h ([] for the default ones), or None when the headers are absent."""
    if shutil.which("pkg-config"):
        try:
            out = subprocess.run(["pkg-config", "--cflags-only-I", "libcrypto"], capture_output=True, text=True,
                                 timeout=10)
            if out.returncode == 0:
                dirs = [f[2:] for f in out.stdout.split() if f.startswith("-I")]
                for d in dirs + ["/usr/include", "/usr/local/include"]:
                    if (Path(d) / "openssl" / "evp.h").is_file():
                        return dirs
        except (OSError, subprocess.SubprocessError):
            pass
    candidates = ["/usr/include", "/usr/local/include", "/opt/homebrew/opt/openssl/include",
                  "/usr/local/opt/openssl/include"]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        candidates.append(f"/usr/include/{multiarch}")
    for d in candidates:
        if (Path(d) / "openssl" / "evp.h").is_file():
            return [] if d in ("/usr/include", "/usr/local/include") else [d]
    return None


class OptionalBuildExt(build_ext):
    """Marks the extension as expected, then builds it; a failure leaves the pure-Python install working."""

    def run(self):
        super().run()   # optional=True: a failed compile is reported by setuptools and skipped
        built = Path(self.get_ext_fullpath("protocols._fast"))
        if built.is_file():
            try:
                (built.parent / "_fast_expected").write_text(
                    "protocols._fast was built with this install: protocols/fast.py warns if it cannot load\n")
            except OSError:
                pass


def _extension() -> Extension:
    include = _openssl_include()
    macros, libraries = [], []
    if include is not None and os.environ.get("GBCS_EMU_NO_OPENSSL") != "1":
        macros.append(("GBCS_FAST_CRYPTO", "1"))
        libraries.append("crypto")
    return Extension("protocols._fast", ["csrc/_gbcs_fast.c"], include_dirs=include or [], define_macros=macros,
                     libraries=libraries, extra_compile_args=["-O2"], optional=True)


setup(ext_modules=[_extension()], cmdclass={"build_ext": OptionalBuildExt})
