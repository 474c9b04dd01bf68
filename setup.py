"""Build script of sdsv.

Two packages: ``sdsv`` (the sampler, from ``python/sdsv``) and ``sdsv_kernels`` (the ops the
sampler calls, from ``sdsv_kernels``). The tiny models' weights ship as package data.
Depends on torch without pinning a build: bring your own (CUDA) torch; on a CPU machine
install ``torch==2.13.0`` first or in the same command.
"""

from setuptools import find_packages, setup


def _packages(root: str, name: str) -> list[str]:
    return [name] + [f"{name}.{p}" for p in find_packages(root)]


setup(
    name="sdsv",
    version="0.1.0",
    description="Speculative sampling with speculative verification for diffusion transformers",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"sdsv": "python/sdsv", "sdsv_kernels": "sdsv_kernels"},
    packages=_packages("python/sdsv", "sdsv") + _packages("sdsv_kernels", "sdsv_kernels"),
    package_data={"sdsv.tiny": ["weights/*.safetensors", "weights/*.json", "weights/*.md"]},
    install_requires=["torch>=2.1", "numpy", "safetensors", "tqdm", "pillow"],
    # diffusers integration (sdsv.enable): tested with diffusers 0.42.1; a changed timestep
    # convention in another version is detected and refused at the first call
    extras_require={
        # what the test suite needs (CI installs it); pinned so CI sees what we tested
        "test": ["pytest", "diffusers==0.42.1", "transformers==5.24.0", "matplotlib==3.11.2"],
        "diffusers": ["diffusers>=0.42.1", "transformers"],
        # `sdsv eval` draws its figures with matplotlib
        "eval": ["matplotlib"],
    },
    entry_points={"console_scripts": ["sdsv=sdsv.cli:main"]},
)
