"""The notebooks run end to end on CPU with shrinking parameters (papermill, python3 kernel)."""

import json
import os
import subprocess
import sys

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")


def _run(name, tmp_path, parameters):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / f"out_{name}"
    env = {"JAX_PLATFORMS": "cpu"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        papermill.execute_notebook(
            os.path.join(NOTEBOOKS, name),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(tmp_path),
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nbformat.read(str(out), as_version=4)


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _images(nb) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        for output in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", ["colab_tpu.ipynb", "convert_weights.ipynb"])
def test_notebooks_are_built_by_the_script_with_outputs_cleared(name, tmp_path):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(
        not c.get("outputs") and not c.get("execution_count")
        for c in nb.cells
        if c.cell_type == "code"
    )
    # The committed file is byte for byte what the builder writes.
    subprocess.run(
        [sys.executable, os.path.join(NOTEBOOKS, "build_notebooks.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    with open(os.path.join(NOTEBOOKS, name), "rb") as committed:
        assert (tmp_path / name).read_bytes() == committed.read()


@pytest.mark.slow
def test_colab_tpu_notebook_trains_and_evaluates_on_cpu(tmp_path):
    nb = _run(
        "colab_tpu.ipynb",
        tmp_path,
        {
            "install": False,
            "repo_dir": REPO,
            "config_name": "tiny",
            "num_steps": 2,
            "data_dir": str(tmp_path / "data"),
            "train_images": 4,
            "val_images": 2,
            "image_size": 96,
            "num_workers": 0,
            "workdir": str(tmp_path / "run"),
        },
    )
    text = _text(nb)
    assert "CPU device(s)" in text
    assert '"AP":' in text  # the metrics printed by the evaluation cell
    metrics = json.loads((tmp_path / "run" / "eval" / "val_metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["num_images"] == 2
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
    assert "people, mask shape" in text
    assert _images(nb) >= 3  # overlays grid, API overlay, alignment figure


@pytest.mark.slow
def test_convert_weights_notebook_round_trips_on_cpu(tmp_path):
    sizes = {
        "backbone_depth": 18,
        "backbone_width": 8,
        "fpn_features": 16,
        "seg_units": 1,
        "seg_width": 8,
        "align_size": 16,
    }
    nb = _run(
        "convert_weights.ipynb",
        tmp_path,
        {
            "weights_path": str(tmp_path / "random.pkl"),
            "model_sizes": sizes,
            "input_size": 96,
            "out_dir": str(tmp_path / "converted"),
        },
    )
    text = _text(nb)
    assert "not found: wrote random weights" in text
    assert "max |logit difference|" in text
    assert (tmp_path / "converted" / "pose2seg_from_jax.pth").is_file()
    assert (tmp_path / "converted" / "overlay.png").is_file()
    assert _images(nb) >= 2
