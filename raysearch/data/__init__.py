"""Skeleton data: the dataset directory format, importers and the torch Dataset.

Modules (imported one by one; this package imports nothing so that `raysearch.data.format`
does not pull in torch):
    format     manifest.json + one memory-mapped Arrow file per split; write_dataset, open_dataset
    layouts    joint names and bones (NTU-25, generic)
    synthetic  procedural NTU-25 actions (no download needed)
    ntu        raw NTU RGB+D .skeleton importer
    npz        CTR-GCN/STTFormer and generic .npz importer
    splits     seeded per-class validation and label-fraction subsets
    augment    STTFormer crop-resize and rotation
    dataset    SkeletonDataset (torch)
    info       dataset_info for `raysearch data-info`
"""
