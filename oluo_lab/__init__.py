"""oluo_lab: ANN search experiments whose every index state is a content-addressed snapshot."""

__version__ = "0.1.0"
