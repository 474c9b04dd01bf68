"""Build script of sdsv.

Two packages: ``sdsv`` (the sampler, from ``python/sdsv``) and ``sdsv_kernels`` (the ops the
sampler calls, from ``sdsv_kernels``). The tiny models' weights ship as package data.
Depends on torch without pinning a build: bring your own (CUDA) torch; on a CPU machine
install ``torch==2.13.0`` first or in the same command.

Native extension ``sdsv_kernels._C`` (optional; docs/kernels.md): built through
``CMakeLists.txt`` against the torch found at build time, so use
``pip install --no-build-isolation .`` (an isolated build has no torch and skips it).

* ``SDSV_BUILD_EXT=0`` — skip all native code (pure-Python install; reference/Triton backends).
* ``SDSV_BUILD_EXT=1`` — the extension is required: missing cmake/compiler/torch is an error.
* unset (auto)         — build it when cmake, a C++ compiler and torch are present, else skip
  with a message. A compile error is always an error (set ``SDSV_BUILD_EXT=0`` to skip).
* CUDA kernels are added when torch has CUDA and nvcc is found; ``SDSV_BUILD_CUDA=0`` turns
  them off; ``SDSV_CUDA_ARCHS`` (default ``80;90``) picks the architectures.
* ``SDSV_BUILD_JOBS`` — parallel compile jobs (default: the CPU count).
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _packages(root: str, name: str) -> list[str]:
    return [name] + [f"{name}.{p}" for p in find_packages(root)]


def _flag(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds CMakeLists.txt; skips (with a message) when it cannot."""

    def run(self):
        required = _flag("SDSV_BUILD_EXT") in ("1", "true", "yes", "on")
        missing = self._missing_tools()
        if missing:
            msg = f"sdsv: not building the C++ extension sdsv_kernels._C: {missing}"
            if required:
                raise RuntimeError(msg + " (SDSV_BUILD_EXT=1 requires it)")
            print("\n" + "*" * 78 + f"\n{msg}.\nThe package works without it (reference/Triton backends).\n" + "*" * 78 + "\n",
                  file=sys.stderr)
            return
        super().run()

    @staticmethod
    def _missing_tools() -> str:
        if shutil.which(os.environ.get("CMAKE", "cmake")) is None:
            return "cmake not found"
        cxx = os.environ.get("CXX")
        if not (cxx and shutil.which(cxx)) and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
            return "no C++ compiler found (set CXX)"
        try:
            import torch  # noqa: F401  (torch.utils.cpp_extension is never imported)
        except ImportError:
            return "torch is not importable in the build environment (use pip install --no-build-isolation)"
        return ""

    def build_extension(self, ext):
        import torch

        out_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        build_dir = os.path.join(HERE, "build", "cmake-" + ext.name.replace(".", "_"))
        os.makedirs(build_dir, exist_ok=True)
        defs = []
        for key, name in (("_PYBIND11_COMPILER_TYPE", "PYBIND11_COMPILER_TYPE"), ("_PYBIND11_STDLIB", "PYBIND11_STDLIB"),
                          ("_PYBIND11_BUILD_ABI", "PYBIND11_BUILD_ABI")):
            val = getattr(torch._C, key, None)
            if val:
                defs.append(f'{name}="{val}"')
        nvcc = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else None)
        with_cuda = bool(torch.version.cuda) and nvcc is not None and os.path.exists(nvcc) and _flag("SDSV_BUILD_CUDA") not in ("0", "false", "no", "off")
        args = [
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
            "-DSDSV_PYBIND11_DEFS=" + ";".join(defs),
            f"-DSDSV_WITH_CUDA={'ON' if with_cuda else 'OFF'}",
        ]
        if with_cuda:
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DSDSV_CUDA_ARCHS={os.environ.get('SDSV_CUDA_ARCHS', '80;90')}"]
        generator = _generator()
        if generator:
            args.append(f"-G{generator}")
        _reset_if_other_generator(build_dir, generator)
        print(f"sdsv: building sdsv_kernels._C (CPU{' + CUDA' if with_cuda else ''}) in {build_dir}"
              f"{' with ' + generator if generator else ''}", file=sys.stderr)
        jobs = os.environ.get("SDSV_BUILD_JOBS") or str(os.cpu_count() or 1)
        cmake = os.environ.get("CMAKE", "cmake")
        try:
            subprocess.check_call([cmake, "-S", HERE, "-B", build_dir, *args])
            subprocess.check_call([cmake, "--build", build_dir, "--config", "Release", "-j", jobs])
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"sdsv: building the C++ extension failed ({exc}); set SDSV_BUILD_EXT=0 to install without it"
            ) from exc


def _generator() -> str | None:
    """Ninja when it is installed (the system's or ``pip install ninja``'s), else CMake's default;
    ``CMAKE_GENERATOR`` in the environment wins, as it does for CMake itself."""
    if os.environ.get("CMAKE_GENERATOR"):
        return None  # cmake reads it
    if shutil.which("ninja"):
        return "Ninja"
    try:
        import ninja  # the pip package puts its binary next to the module

        if os.path.exists(os.path.join(ninja.BIN_DIR, "ninja")):
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
            return "Ninja"
    except (ImportError, AttributeError):
        pass
    return None


def _reset_if_other_generator(build_dir: str, generator: str | None) -> None:
    """A build folder configured with another generator cannot be reused: start it afresh."""
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if not generator or not os.path.exists(cache):
        return
    with open(cache) as f:
        used = next((line.split("=", 1)[1].strip() for line in f if line.startswith("CMAKE_GENERATOR:")), None)
    if used and used != generator:
        shutil.rmtree(build_dir)
        os.makedirs(build_dir)


_ext_modules = [] if _flag("SDSV_BUILD_EXT") in ("0", "false", "no", "off") else [CMakeExtension("sdsv_kernels._C")]

setup(
    name="sdsv",
    version="0.1.0",
    description="Speculative sampling with speculative verification for diffusion transformers",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"sdsv": "python/sdsv", "sdsv_kernels": "sdsv_kernels"},
    packages=_packages("python/sdsv", "sdsv") + _packages("sdsv_kernels", "sdsv_kernels"),
    package_data={"sdsv.tiny": ["weights/*.safetensors", "weights/*.json", "weights/*.md"],
                  # the tiny Flux as a diffusers folder: FluxPipeline.from_pretrained(sdsv.tiny.flux.PIPELINE_DIR)
                  "sdsv.tiny.flux": ["pipeline/*.json", "pipeline/*.md", "pipeline/*/*.json", "pipeline/*/*.safetensors"]},
    ext_modules=_ext_modules,
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["torch>=2.1", "numpy", "safetensors", "tqdm", "pillow"],
    extras_require={
        # what the tests and benchmarks import; the exact tested versions of these and of everything
        # they pull in are in constraints.txt, which the README command and .ci/run install with
        "test": ["pytest>=9", "pytest-benchmark>=5.3.1", "hypothesis==6.155.2", "diffusers==0.42.1", "transformers==5.24.0", "triton==3.9.0",
                 "matplotlib==3.11.2", "cache-dit==1.5.3"],
        # the caches sdsv is compared with (`sdsv eval --experiment peers`) beyond diffusers' own hooks
        "peers": ["cache-dit>=1.5.3"],
        # diffusers integration (sdsv.enable): tested with diffusers 0.42.1; a changed timestep
        # convention in another version is detected and refused at the first call
        "diffusers": ["diffusers>=0.42.1", "transformers"],
        "triton": ["triton"],
        # `sdsv eval` draws its figures with matplotlib
        "eval": ["matplotlib"],
    },
    entry_points={"console_scripts": ["sdsv=sdsv.cli:main"]},
)
