from snap_helpers import engine_and_vectors, lab_dir, make_lab  # noqa: F401
