"""Packaging for keras-csl."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = {}
exec((HERE / "keras_csl" / "version.py").read_text(), VERSION)

setup(
    name="keras-csl",
    version=VERSION["__version__"],
    description=(
        "Class-aware Selective Loss (CSL) for multi-label classification "
        "with partial annotations, for Keras 3 and TensorFlow."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_csl", "keras_csl.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.5,<4",
        "numpy>=1.23",
        "absl-py>=1.0",
        # TensorFlow no longer installs it; the training loop logs to it.
        "tensorboard>=2.16",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "jax>=0.4.30",
            "scikit-learn>=1.2",
            "matplotlib>=3.6",
            "pillow>=9",
            # keras_csl.models.hub; its tests build tiny presets locally.
            "keras-hub>=0.21",
            # The PyTorch checks (the loss on Keras's torch backend, the
            # authors' loss as a reference). This exact release is the
            # registry's small CPU build here; a newer or unpinned torch
            # would pull several GB of CUDA libraries. timm is not in the
            # extra: its torchvision needs a CUDA torch, so the TResNet
            # parity tests use committed golden fixtures when it is absent.
            "torch==2.13.0",
            # Independent references: the safetensors package for our NumPy
            # reader of .safetensors checkpoints, and TF Serving's own
            # PredictionService protos for the gRPC client of SERVING.md.
            "safetensors>=0.4",
            "tensorflow-serving-api>=2.16",
        ],
        # keras-hub backbones: build_model("hub:<preset>").
        "hub": ["keras-hub>=0.21"],
        # Reading PyTorch .pth checkpoints in keras_csl.models.convert_checkpoint
        # (.safetensors files need no torch). PyPI's default Linux wheel pulls
        # the CUDA libraries; for a CPU-only install first run
        # pip install torch --index-url https://download.pytorch.org/whl/cpu
        "torch": ["torch>=2.1"],
        "demo": ["scikit-learn>=1.2", "matplotlib>=3.6", "pillow>=9"],
    },
    include_package_data=True,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
