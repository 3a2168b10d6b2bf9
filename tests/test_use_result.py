"""README "Using the result in your own code": ``examples/use_result.py`` is in the README verbatim, and it
builds the searched net from ``gene.json``, loads the retrained weights and segments an image as
``bixnas predict`` does."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "use_result.py"


def test_the_readme_holds_the_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert "## Using the result in your own code" in readme
    assert f"```python\n{EXAMPLE.read_text()}```" in readme


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """What `bixnas export` leaves for a user: gene.json (an NNI sample) and the retrained best.ckpt."""
    from nni_bixnas import Gene
    from nni_bixnas.training import fit

    root = tmp_path_factory.mktemp("use_result")
    gene = Gene.dense(3, 4)  # not the published gene: the example must build the net gene.json names
    result = fit("bixnet", "default:n=7,size=32", max_epochs=1, out_dir=root / "run", progress=False,
                 model_kwargs={"gene": gene.to_text(), "width": 4, "stem_width": 4}, num_threads=1)
    export = root / "export"
    export.mkdir()
    shutil.copy(result.best_checkpoint, export / "best.ckpt")
    (export / "gene.json").write_text(json.dumps({"sample": gene.to_sample(), "source": "test"}))
    return export


def test_the_example_segments_an_image_as_bixnas_predict_does(export_dir, tmp_path, monkeypatch):
    from nni_bixnas.data.build import load_collection
    from nni_bixnas.training import predict

    image, _ = load_collection("default:n=1,size=32,seed=7").load("synthetic_0000")
    image_path = tmp_path / "tile.png"
    Image.fromarray(np.asarray(image).transpose(1, 2, 0)).save(image_path)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(export_dir), str(image_path), str(tmp_path / "mask.png")])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    ours = np.asarray(Image.open(tmp_path / "mask.png"))
    predict(export_dir / "best.ckpt", [image_path], tmp_path / "pred")
    theirs = np.asarray(Image.open(tmp_path / "pred" / "tile_mask.png"))
    assert ours.shape == (32, 32) and np.array_equal(ours, theirs)


def test_the_example_net_is_the_one_gene_json_names(export_dir):
    example = runpy.run_path(str(EXAMPLE))
    from nni_bixnas.training import read_checkpoint

    checkpoint = read_checkpoint(export_dir / "best.ckpt")
    net = example["build_net"](export_dir / "gene.json", **example["searched_model_args"](checkpoint))
    sample = json.loads((export_dir / "gene.json").read_text())["sample"]
    assert net.gene.to_sample() == sample
    example["load_weights"](net, checkpoint)  # strict: every weight fits
    import torch

    from nni_bixnas.training import load_task

    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), load_task(export_dir / "best.ckpt").model(x))
