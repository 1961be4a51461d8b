"""Build the bundled ``mtcnn_onet`` zoo model (3 outputs) and its labelled face / non-face test set.

Model: MTCNN's output network ONet from facenet-pytorch 2.6.0 (MIT; weights
``facenet_pytorch/data/onet.pt`` in the wheel), as
:class:`harness.zoo.onet_torch.ONet` (the same numbers as
``facenet_pytorch.models.mtcnn.ONet``; checked here). Input ``image`` (1, 3, 48, 48):
an RGB crop normalised ``(pixel - 127.5) * 0.0078125``. Outputs, in the package's
order: ``box_reg`` (1, 4) bounding-box regression, ``landmarks`` (1, 10) five facial
landmarks, ``face_prob`` (1, 2) softmax [non-face, face].

Test set (:mod:`harness.zoo.face_data`): 512 face crops (IoU >= 0.65) and 512
non-faces (background crops, and face parts with IoU < 0.3) drawn from
scikit-image's ``lfw_subset`` (Labeled Faces in the Wild, 25x25 grayscale, in the
scikit-image wheel), jittered, resized to 48x48, contrast/brightness/noise, 8-bit,
gray replicated to RGB; seed 0. ``image`` (1024, 3, 48, 48), ``y`` = 1 face / 0
non-face (= the column index of ``face_prob``). Metric: accuracy of the argmax of
``face_prob`` (``metric.output=face_prob``; the first output is ``box_reg``).

    python -m harness.zoo.build_mtcnn_onet [--out DIR]

Needs the zoo build environment (torch 2.13.0, facenet-pytorch 2.6.0 with
--no-deps: it pins torch<2.3 and torchvision; only its ONet class and weights are
used, torchvision is stubbed for the check; scikit-image 0.26).
"""
from __future__ import annotations

import numpy as np
import torch

from harness.zoo import _build, face_data
from harness.zoo._record import record_pretrained, sha256_file
from harness.zoo._torch import convert_module
from harness.zoo.onet_torch import ONet, package_onet, weights_path

NAME = "mtcnn_onet"
OUTPUTS = ["box_reg", "landmarks", "face_prob"]
SEED = 0
N_POS = N_NEG = 512
PACKAGES = ("torch", "coremltools", "numpy", "facenet-pytorch", "scikit-image")


def main(argv=None) -> None:
    args = _build.parser(__doc__).parse_args(argv)
    out = _build.out_dir(args.out, on_demand=False)
    torch.set_num_threads(1)

    x, y, info = face_data.build(N_POS, N_NEG, seed=SEED)
    _build.save_npz(out / f"{NAME}.npz", {"image": x, "y": y})
    print(f"test set: {x.shape}")

    model = ONet().load_facenet()
    with torch.no_grad():
        mine = [t.numpy() for t in model(torch.from_numpy(x))]
        theirs = [t.numpy() for t in package_onet()(torch.from_numpy(x))]
    rewrite_err = _build.check("rewrite vs facenet_pytorch ONet",
                               max(_build.max_abs(a, b) for a, b in zip(mine, theirs)), 1e-5)

    spec = convert_module(model, {"image": x[:1]}, OUTPUTS)
    spec.description.input[0].shortDescription = "RGB crop 48x48, (pixel - 127.5) * 0.0078125"
    for o, d in zip(spec.description.output, ["bounding-box regression (dx1, dy1, dx2, dy2)",
                                              "5 landmarks (x1..x5, y1..y5), relative to the crop",
                                              "softmax [non-face, face]"]):
        o.shortDescription = d
    spec.description.metadata.shortDescription = "MTCNN ONet (facenet-pytorch 2.6.0, MIT)"
    spec.description.metadata.license = "MIT (facenet-pytorch, timesler/facenet-pytorch)"

    o = _build.predict(spec, {"image": x})
    exec_err = {k: _build.max_abs(o[k], m) for k, m in zip(OUTPUTS, mine)}
    _build.check(f"numpy executor vs torch (worst of {', '.join(OUTPUTS)})", max(exec_err.values()), 1e-4)
    acc = float((o["face_prob"].reshape(len(y), 2).argmax(1) == y).mean())
    print(f"accuracy (argmax of face_prob): {acc:.4f}")
    record_pretrained(
        spec, NAME, out,
        description="MTCNN ONet: 4 conv + PReLU (3 max-pools), dense 1152->256 + PReLU, three heads: box "
                    "regression (4), landmarks (10), face softmax (2).",
        task="multi-output", outputs={"probability_output": "face_prob"},
        metric={"name": "accuracy", "output": "face_prob", "value": acc,
                "rule": "argmax of face_prob (= face_prob[:, 1] > 0.5) == y (1 = face)",
                "measured_with": _build.MEASURED},
        source={"package": "facenet-pytorch", "version": "2.6.0", "file": "facenet_pytorch/data/onet.pt",
                "file_sha256": sha256_file(weights_path()),
                "licence": "MIT (facenet-pytorch); the weights are a port of Zhang et al.'s MTCNN models "
                           "(kpzhang93/MTCNN_face_detection_alignment) via davidsandberg/facenet (MIT)",
                "upstream": "timesler/facenet-pytorch"},
        dataset={"file": f"{NAME}.npz", "positives": int(y.sum()), "seed": SEED,
                 "labels": "y: 1 = face (crop IoU >= 0.65), 0 = non-face (background, or face part IoU < 0.3)",
                 "generator": "harness/zoo/face_data.py",
                 "images": "skimage.data.lfw_subset() (scikit-image 0.26.0 wheel, skimage/data/lfw_subset.npy): "
                           "100 faces + 100 backgrounds from Labeled Faces in the Wild, 25x25 gray",
                 "composition": _build.composition(info, lambda s: "".join(c for c in s.split()[0] if c.isalpha())),
                 "licence": ("LFW caveat: crops of Labeled Faces in the Wild photographs (news photos collected "
                             "from the web). LFW's authors (UMass Amherst) state no licence and distribute them for "
                             "research use; scikit-image (BSD-3-Clause) redistributes this subset in its wheel. The "
                             "crops inherit that status: research and evaluation use only.")},
        build={"script": "harness/zoo/build_mtcnn_onet.py", "command": "python -m harness.zoo.build_mtcnn_onet",
               "checks": {"rewrite_vs_package_max_abs": rewrite_err, "executor_vs_torch_max_abs": exec_err}},
        packages=PACKAGES)


if __name__ == "__main__":
    main()
