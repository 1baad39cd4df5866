"""Skeleton data: the dataset directory format, importers and the torch Dataset.

Modules (imported one by one; this package imports nothing so that `raysearch.data.format`
does not pull in torch):
    format     manifest.json + one memory-mapped Arrow file per split; write_dataset, open_dataset
    layouts    joint names and bones (NTU-25, MSR Action3D-20, generic)
    normalise  Normalisation (centre joint, optional scale) every importer and predict apply
    jsonfile   read_json_file: size, depth and syntax checked, one-line errors
    preprocessing  an artifact's preprocessing.json (written by export, read by predict)
    synthetic  procedural NTU-25 actions (no download needed)
    ntu        raw NTU RGB+D .skeleton importer
    npz        CTR-GCN/STTFormer and generic .npz: read_npz (import and predict), prepare_npz
    splits     seeded per-class validation and label-fraction subsets
    augment    STTFormer crop-resize and rotation
    dataset    SkeletonDataset (torch)
    info       dataset_info for `raysearch data-info`
"""
