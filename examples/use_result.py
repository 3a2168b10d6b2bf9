"""Use a searched net in your own code: build it from gene.json, load the retrained weights, segment an image.

    python examples/use_result.py EXPORT_DIR IMAGE OUT.png

EXPORT_DIR is what `bixnas export ID` wrote: gene.json (the searched architecture) and best.ckpt (the
retrained weights). Needs only torch, Pillow and nni_bixnas.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nni_bixnas import Gene, create_model
from nni_bixnas.training import read_checkpoint


def build_net(gene_json, **model_args):
    """The searched BiO-Net++ of gene.json, e.g. build_net("gene.json", width=16, stem_width=16)."""
    sample = json.loads(Path(gene_json).read_text())["sample"]  # {block label: chosen inputs}
    gene = Gene.from_sample(sample, model_args.get("iterations", 3), model_args.get("levels", 4))
    return create_model("bixnet", gene=gene, **model_args)


def searched_model_args(checkpoint):
    """The arguments the net was searched and retrained with (width, stem_width, ...), from its checkpoint."""
    kwargs = checkpoint["hyper_parameters"]["model_kwargs"]
    return {key: value for key, value in kwargs.items() if key != "gene"}


def load_weights(net, checkpoint):
    """Copy the network weights of a training checkpoint into ``net``."""
    prefix = "model."  # the checkpoint holds the Lightning task; the network is its `model`
    state = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    net.load_state_dict(state)
    return net.eval()


@torch.no_grad()
def segment(net, image_path, threshold=0.5):
    """The predicted mask of one RGB image: 0/1 for a binary net, class ids for a multi-class one."""
    rgb = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # 1 x 3 x H x W in [0, 1], as in training
    height, width = x.shape[-2:]
    x = F.pad(x, (0, -width % 32, 0, -height % 32), mode="replicate")  # sides divisible by 2**levels
    logits = net(x)[0, :, :height, :width]
    if logits.shape[0] == 1:
        return (torch.sigmoid(logits[0]) > threshold).numpy().astype(np.uint8)
    return logits.argmax(0).numpy().astype(np.uint8)


def main(export_dir, image_path, out_path):
    export_dir = Path(export_dir)
    checkpoint = read_checkpoint(export_dir / "best.ckpt")  # weights-only: tensors and plain data, no code
    net = load_weights(build_net(export_dir / "gene.json", **searched_model_args(checkpoint)), checkpoint)
    mask = segment(net, image_path)
    binary = checkpoint["hyper_parameters"].get("num_classes", 1) == 1
    Image.fromarray(mask * 255 if binary else mask).save(out_path)  # binary: 0/255, else class ids
    print(f"{image_path}: {int((mask > 0).sum())} foreground pixels of {mask.size} -> {out_path}")
    return mask


if __name__ == "__main__":
    main(*sys.argv[1:4])
