from snap_helpers import engine_and_vectors, lab_dir  # noqa: F401
