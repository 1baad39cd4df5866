"""dataset_info: the numbers `raysearch data-info` prints."""

import json

from raysearch.data.format import open_dataset
from raysearch.data.info import dataset_info
from raysearch.data.synthetic import prepare_synthetic


def test_dataset_info_summarises_every_split(tmp_path):
    path = prepare_synthetic(tmp_path / "syn", num_classes=4, per_class=10, max_frames=20, seed=2)
    info = dataset_info(path)
    json.dumps(info)  # plain JSON types only
    ds = open_dataset(path)
    assert info["layout"] == {"name": "ntu-25", "num_joints": 25, "num_bones": 24,
                              "center_joint": "spine_mid"}
    assert info["num_classes"] == 4 and info["class_names"] == list(ds.class_names)
    assert info["normalisation"].startswith("centred on spine_mid (joint 1) of person 1")
    assert info["total_samples"] == 40
    for name in ds.split_names:
        split, view = info["splits"][name], ds.split(name)
        assert split["count"] == len(view)
        assert split["frames"]["min"] == view.num_frames.min() >= 12
        assert split["frames"]["max"] == view.num_frames.max() <= 20
        assert sum(split["persons"].values()) == len(view)
    assert info["splits"]["train"]["classes"]["empty_classes"] == []
    assert info["disk_mb"] > 0 and info["source"]["importer"] == "synthetic"
