from pathlib import Path

from setuptools import setup

here = Path(__file__).parent


def requirements(name):
    lines = (here / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="openwit",
    version="0.1.0",
    description="Build web-scale image-text datasets for CLIP training (a rebuild of WIT) with Apache Beam",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # asyncio.timeout, asyncio.Runner, python -P
    packages=["openwit", "pipeline", "queries", "dedup", "encoders", "training"],
    # The model sizes, CLIP's BPE merges and the zero-shot templates travel with the package (MANIFEST.in
    # puts them in the sdist that Beam stages from --setup_file).
    include_package_data=True,
    package_data={"encoders": ["configs/*.json", "bpe_clip_49408.txt.gz", "LICENSE-bpe"],
                  "training": ["templates/*.txt"]},
    install_requires=requirements("requirements.txt"),
    extras_require={
        "dev": requirements("requirements-dev.txt"),
        # CPU build on these machines; pick the CUDA wheel for your GPU from pytorch.org when training there.
        "train": ["torch==2.13.0", "regex==2026.11.19", "tqdm==4.70.1"],  # tqdm: the progress bar of openwit train
        # Dataflow and gs:// paths: Beam's GCP filesystem and runner (the launcher needs them; the worker image has them).
        "gcp": ["apache-beam[gcp]==2.77.0"],
        # --pickle_library=dill (Beam's default is cloudpickle, in Beam itself).
        "dill": ["apache-beam[dill]==2.77.0"],
    },
    entry_points={
        "console_scripts": [
            "openwit=openwit.cli:main",
            # `beam run pipeline/build_wit.py --runner ...`, as Beam users launch pipeline files.
            "beam=openwit.beam_cli:main",
        ]
    },
)
